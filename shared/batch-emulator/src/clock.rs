//! Time on the wire: Batch timestamps, HTTP dates, relative scenario times and ETags.
//!
//! Batch renders timestamps as RFC 3339 UTC with seven fractional digits
//! (`2016-09-06T06:59:15.1161429Z`) and ETags as the hex of .NET `DateTime` ticks
//! (`0x8D4100FC46D5BF4` is 2016-11-19); this module produces both so responses look like the
//! corpus.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// Formats a time the way Batch does: UTC, seven fractional digits, `Z`.
pub(crate) fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// Parses an RFC 3339 timestamp (any number of fractional digits, any offset).
pub(crate) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).ok()
}

/// Formats a time as an RFC 7231 HTTP date (`Fri, 17 Feb 2017 00:00:00 GMT`).
pub(crate) fn http_date(t: OffsetDateTime) -> String {
    httpdate::fmt_http_date(SystemTime::from(t))
}

/// Parses an RFC 7231 HTTP date.
pub(crate) fn parse_http_date(text: &str) -> Option<OffsetDateTime> {
    httpdate::parse_http_date(text.trim())
        .ok()
        .map(OffsetDateTime::from)
}

/// Resolves a relative scenario time such as `now`, `now-5m` or `now+1h30m` against `now`.
///
/// Returns `None` when `text` is not a relative time, so ordinary strings pass through.
pub(crate) fn resolve_relative(text: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let rest = text.strip_prefix("now")?;
    if rest.is_empty() {
        return Some(now);
    }
    let (sign, amount) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => return None,
    };
    let duration = parse_short_duration(amount)?;
    if sign < 0 {
        now.checked_sub(duration)
    } else {
        now.checked_add(duration)
    }
}

/// Says whether `text` looks like it was meant as a relative time (starts with `now-`/`now+`).
pub(crate) fn looks_relative(text: &str) -> bool {
    text == "now" || text.starts_with("now-") || text.starts_with("now+")
}

/// Parses durations like `90s`, `5m`, `2h30m`, `1d`, `250ms`.
fn parse_short_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let value: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::milliseconds(value),
            "s" => Duration::seconds(value),
            "m" => Duration::minutes(value),
            "h" => Duration::hours(value),
            "d" => Duration::days(value),
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// .NET `DateTime` ticks (100 ns since 0001-01-01) of a time, which is what Batch ETags encode.
pub(crate) fn ticks(t: OffsetDateTime) -> u64 {
    const EPOCH_DIFF_TICKS: i128 = 621_355_968_000_000_000;
    let ticks = t.unix_timestamp_nanos() / 100 + EPOCH_DIFF_TICKS;
    u64::try_from(ticks.max(0)).unwrap_or(u64::MAX)
}

/// Hands out ETags that look like Batch's and strictly increase, so every change gets a new one
/// even when two changes fall in the same 100 ns tick.
#[derive(Debug, Default)]
pub(crate) struct EtagClock {
    /// The last tick value handed out.
    last: u64,
}

impl EtagClock {
    /// The next ETag, at or after `now`.
    pub(crate) fn next(&mut self, now: OffsetDateTime) -> String {
        let ticks = ticks(now).max(self.last.saturating_add(1));
        self.last = ticks;
        format!("0x{ticks:X}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_seven_digits() {
        let t = datetime!(2016-09-06 06:59:15.1161429 UTC);
        assert_eq!(format_time(t), "2016-09-06T06:59:15.1161429Z");
    }

    #[test]
    fn relative_times() {
        let now = datetime!(2025-01-01 12:00 UTC);
        assert_eq!(
            resolve_relative("now-2h30m", now),
            Some(datetime!(2025-01-01 09:30 UTC))
        );
        assert_eq!(
            resolve_relative("now+1d", now),
            Some(datetime!(2025-01-02 12:00 UTC))
        );
        assert_eq!(resolve_relative("now", now), Some(now));
        assert_eq!(resolve_relative("now-", now), None);
        assert_eq!(resolve_relative("now-5x", now), None);
        assert_eq!(resolve_relative("nowhere", now), None);
        assert_eq!(resolve_relative("now-99999999999999d", now), None);
    }

    #[test]
    fn etags_increase() {
        let now = datetime!(2016-11-19 00:05:27.2137716 UTC);
        let mut clock = EtagClock::default();
        let a = clock.next(now);
        let b = clock.next(now);
        assert!(a.starts_with("0x8D4"));
        assert_ne!(a, b);
    }
}
