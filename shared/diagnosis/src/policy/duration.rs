//! Human durations ("30s", "5m", "4h", "1h30m") as in Alertmanager's configuration.

use std::time::Duration;

/// The longest duration a policy may name: longer ones are almost certainly typos, and capping
/// keeps timestamp arithmetic far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration made of `<integer><unit>` parts, units `ms`, `s`, `m`, `h`, `d`, `w`.
/// `"0s"` is allowed; a sign, a fraction, an empty string or an unknown unit is an error that
/// says why.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!(
            "duration {text:?} is negative; durations are at least 0s"
        ));
    }
    if text.is_empty() {
        return Err("empty duration; write e.g. \"30s\", \"5m\" or \"4h\"".to_owned());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "duration {text:?} is not <number><unit>, e.g. \"30s\", \"5m\", \"4h\", \"1h30m\""
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?} is too long"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds_per_unit: u64 = match unit {
            "ms" => {
                total = total.saturating_add(Duration::from_millis(number));
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            "" => {
                return Err(format!(
                    "duration {text:?} has a number without a unit (ms, s, m, h, d, w)"
                ));
            }
            other => {
                return Err(format!(
                    "duration {text:?} has unknown unit {other:?} (use ms, s, m, h, d or w)"
                ));
            }
        };
        total = total.saturating_add(Duration::from_secs(number.saturating_mul(seconds_per_unit)));
    }
    if total > MAX_DURATION {
        return Err(format!("duration {text:?} is longer than 365 days"));
    }
    Ok(total)
}

/// Formats a duration the way a policy writes it ("4h", "1h30m", "250ms"), so what is printed
/// can be pasted into a policy. Diagnoses use it too (a task's wall-clock limit, a job stuck
/// for "2h15m"): one format everywhere.
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    let millis = duration.subsec_millis();
    if secs == 0 {
        return if millis == 0 {
            "0s".to_owned()
        } else {
            format!("{millis}ms")
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(4 * 3600)), "4h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for bad in [
            "-5m",
            "",
            "5",
            "5x",
            "m5",
            "1.5h",
            "400d",
            "99999999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
