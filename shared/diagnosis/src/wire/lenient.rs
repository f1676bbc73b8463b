//! Deserialisers for what the Batch wire really sends, as opposed to what the spec says.
//!
//! - Enum values arrive in any casing (`failure`, `Failure`, `UserError`) and new values appear
//!   without notice: `wire_enum!` matches case-insensitively and keeps unknown values.
//! - int64 fields are JSON strings in TypeSpec-era API versions (`"contentLength": "1813"`) and
//!   numbers in older ones: [`int`] accepts both.
//! - Timestamps have up to 7 fractional digits, and event bodies use `2019-08-22 20:50:59.522`
//!   (a space, no zone): [`Timestamp`] accepts both.
//! - The "infinite" duration is `P10675199DT2H48M5.4775807S` (.NET `TimeSpan.MaxValue`):
//!   [`IsoDuration`] saturates instead of overflowing.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Declares a Batch enum: case-insensitive on input, canonical (spec) casing on output, and an
/// `Other` variant that keeps any value this version does not know.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* #[doc = concat!("`", $wire, "` on the wire.")] $variant,)+
            /// A value this version does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// Maps a wire string to a variant, ignoring ASCII case.
            pub fn from_wire(value: &str) -> Self {
                $(if value.eq_ignore_ascii_case($wire) { return Self::$variant; })+
                Self::Other(value.to_owned())
            }

            /// The canonical wire spelling (the spec's lowercase form, or the unknown value).
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(value) => value,
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct EnumVisitor;
                impl serde::de::Visitor<'_> for EnumVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " string"))
                    }
                    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<$name, E> {
                        Ok($name::from_wire(value))
                    }
                }
                deserializer.deserialize_str(EnumVisitor)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

/// `deserialize_with` helpers for integers that may arrive as JSON numbers or strings.
pub mod int {
    use super::*;

    struct IntVisitor;

    impl Visitor<'_> for IntVisitor {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer, or a string holding one")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("integer {v} is out of range")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // Some serialisers write integral values as `1.0`; accept those, refuse fractions.
            if v.fract() == 0.0 && v >= i64::MIN as f64 && v <= i64::MAX as f64 {
                Ok(Some(v as i64))
            } else {
                Err(E::custom(format!("expected an integer, found {v}")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let trimmed = v.trim();
            if trimmed.is_empty() {
                return Ok(None);
            }
            trimmed
                .parse::<i64>()
                .map(Some)
                .map_err(|_| E::custom(format!("expected an integer, found the string {v:?}")))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    /// An optional i64 from a number, a numeric string, `""` or `null`.
    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_any(IntVisitor)
    }

    /// An optional i32 from a number, a numeric string, `""` or `null`, range-checked.
    pub fn opt_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        match d.deserialize_any(IntVisitor)? {
            None => Ok(None),
            Some(v) => i32::try_from(v)
                .map(Some)
                .map_err(|_| de::Error::custom(format!("integer {v} does not fit in 32 bits"))),
        }
    }

    /// A required-by-spec i32 counter that defaults to 0 when absent or null.
    pub fn i32_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        opt_i32(d).map(Option::unwrap_or_default)
    }
}

/// A point in time as Batch writes it: RFC 3339 with up to 7 (we accept 9) fractional digits, or
/// the diagnostic-event form `2019-08-22 20:50:59.522` (space separator, no zone, meaning UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    /// Parses any of the accepted forms; `None` if the text is not a timestamp.
    pub fn parse(text: &str) -> Option<Self> {
        parse_timestamp(text.trim()).map(Timestamp)
    }

    /// Seconds since the Unix epoch, with the fraction.
    pub fn unix_seconds_f64(self) -> f64 {
        self.0.unix_timestamp_nanos() as f64 / 1e9
    }

    /// RFC 3339 in UTC with the fraction Batch would print (up to 7 digits, trailing zeros kept
    /// out).
    pub fn to_rfc3339(self) -> String {
        let utc = self.0.to_offset(UtcOffset::UTC);
        let (h, m, s, nanos) = utc.to_hms_nano();
        let mut out = format!(
            "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}",
            utc.year(),
            u8::from(utc.month()),
            utc.day()
        );
        if nanos != 0 {
            let frac = format!("{:07}", nanos / 100);
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }
}

fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    let bytes = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let day = u8::try_from(num(8..10)?).ok()?;
    let hour = u8::try_from(num(11..13)?).ok()?;
    let minute = u8::try_from(num(14..16)?).ok()?;
    let second = u8::try_from(num(17..19)?).ok()?;

    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Keep nanosecond precision; anything finer than that is dropped, not rounded.
        let kept = &after_dot[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
        rest = &after_dot[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => UtcOffset::UTC,
        zone if zone.len() == 6 && matches!(zone.as_bytes()[0], b'+' | b'-') => {
            let sign: i8 = if zone.starts_with('-') { -1 } else { 1 };
            if zone.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i8 = zone[1..3].parse().ok()?;
            let minutes: i8 = zone[4..6].parse().ok()?;
            UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?
        }
        _ => return None,
    };
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or `YYYY-MM-DD hh:mm:ss[.fff]`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v)
                    .ok_or_else(|| E::custom(format!("{v:?} is not a timestamp Batch writes")))
            }
        }
        d.deserialize_str(TimestampVisitor)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// The number of days from which Batch means "no limit": .NET `TimeSpan.MaxValue` is
/// 10675199 days and change, and no real constraint comes anywhere near it.
const INFINITE_DAYS: u64 = 10_675_199;

/// An ISO 8601 duration (`PT1H30M`, `P7D`, `P10675199DT2H48M5.4775807S`) as Batch writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IsoDuration {
    /// A real limit.
    Finite(Duration),
    /// Batch's "unlimited" (`TimeSpan.MaxValue`) or anything at least that long.
    Infinite,
}

impl IsoDuration {
    /// Parses `PnW`, `PnD`, `PTnHnMn.nS` and their combinations; years and months are taken as
    /// 365 and 30 days (Batch never sends them). `None` if the text is not a duration.
    pub fn parse(text: &str) -> Option<Self> {
        let body = text.trim().strip_prefix(['P', 'p'])?;
        if body.is_empty() {
            return None;
        }
        let (date_part, time_part) = match body.find(['T', 't']) {
            Some(i) => (&body[..i], Some(&body[i + 1..])),
            None => (body, None),
        };
        let mut total_nanos: u128 = 0;
        let mut any = false;
        let mut consume = |part: &str, units: &[(char, u128)]| -> Option<()> {
            let mut number = String::new();
            for c in part.chars() {
                if c.is_ascii_digit() || c == '.' || c == ',' {
                    number.push(if c == ',' { '.' } else { c });
                    continue;
                }
                let unit = units
                    .iter()
                    .find(|(u, _)| u.eq_ignore_ascii_case(&c))
                    .map(|(_, n)| *n)?;
                if number.is_empty() {
                    return None;
                }
                total_nanos = total_nanos.saturating_add(scaled(&number, unit)?);
                number.clear();
                any = true;
            }
            number.is_empty().then_some(())
        };
        const S: u128 = 1_000_000_000;
        consume(
            date_part,
            &[
                ('Y', 365 * 86_400 * S),
                ('M', 30 * 86_400 * S),
                ('W', 7 * 86_400 * S),
                ('D', 86_400 * S),
            ],
        )?;
        if let Some(time_part) = time_part {
            if time_part.is_empty() {
                return None;
            }
            consume(time_part, &[('H', 3_600 * S), ('M', 60 * S), ('S', S)])?;
        }
        if !any {
            return None;
        }
        if total_nanos >= u128::from(INFINITE_DAYS) * 86_400 * S {
            return Some(Self::Infinite);
        }
        let secs = u64::try_from(total_nanos / S).ok()?;
        Some(Self::Finite(Duration::new(secs, (total_nanos % S) as u32)))
    }

    /// The limit, if there is one.
    pub fn finite(self) -> Option<Duration> {
        match self {
            Self::Finite(d) => Some(d),
            Self::Infinite => None,
        }
    }

    /// The ISO 8601 text, with Batch's own spelling for "infinite".
    pub fn to_iso(self) -> String {
        match self {
            Self::Infinite => "P10675199DT2H48M5.4775807S".to_owned(),
            Self::Finite(d) => {
                let total = d.as_secs();
                let (days, rem) = (total / 86_400, total % 86_400);
                let (h, m, s) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
                let mut out = String::from("P");
                if days > 0 {
                    out.push_str(&format!("{days}D"));
                }
                if rem > 0 || d.subsec_nanos() > 0 || days == 0 {
                    out.push('T');
                    if h > 0 {
                        out.push_str(&format!("{h}H"));
                    }
                    if m > 0 {
                        out.push_str(&format!("{m}M"));
                    }
                    if s > 0 || d.subsec_nanos() > 0 || (h == 0 && m == 0) {
                        out.push_str(&format!("{s}"));
                        if d.subsec_nanos() > 0 {
                            let frac = format!("{:09}", d.subsec_nanos());
                            out.push('.');
                            out.push_str(frac.trim_end_matches('0'));
                        }
                        out.push('S');
                    }
                }
                out
            }
        }
    }
}

/// `number` (digits with an optional fraction) times `unit` nanoseconds, saturating.
fn scaled(number: &str, unit: u128) -> Option<u128> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        // More digits than u128 holds is "forever" for our purposes.
        whole.parse().unwrap_or(u128::MAX / unit.max(1))
    };
    let mut nanos = whole.saturating_mul(unit);
    let mut scale = unit;
    for digit in frac.bytes().take(18) {
        scale /= 10;
        nanos = nanos.saturating_add(u128::from(digit - b'0') * scale);
    }
    Some(nanos)
}

impl<'de> Deserialize<'de> for IsoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = IsoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 8601 duration such as PT1H30M")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IsoDuration, E> {
                IsoDuration::parse(v)
                    .ok_or_else(|| E::custom(format!("{v:?} is not an ISO 8601 duration")))
            }
        }
        d.deserialize_str(DurationVisitor)
    }
}

impl Serialize for IsoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_iso())
    }
}

/// Reads a list that may arrive as an array, a single object (the legacy `values: {name, value}`
/// shape), or `null`.
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
        Null(()),
    }
    Ok(match OneOrMany::<T>::deserialize(d)? {
        OneOrMany::Many(items) => items,
        OneOrMany::One(item) => vec![item],
        OneOrMany::Null(()) => Vec::new(),
    })
}

/// Reads a value when it is well-formed and the type's default when it is not. For keys that a
/// shared type reads for some of its uses and other uses always ignored: any JSON there still
/// reads, as before.
pub fn tolerant<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: de::DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

/// [`one_or_many`] made [`tolerant`]: `None` when the list is ill-formed, so that it counts as
/// absent.
pub fn tolerant_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(one_or_many(value).ok())
}

/// Treats `""` as absent: event bodies send `"code": ""` for "no error".
pub fn non_empty_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(d)?;
    Ok(value.filter(|s| !s.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_form_batch_writes() {
        let seven = Timestamp::parse("2025-11-21T22:43:31.4733476Z").unwrap();
        assert_eq!(seven.to_rfc3339(), "2025-11-21T22:43:31.4733476Z");
        let event = Timestamp::parse("2019-08-22 20:50:59.522").unwrap();
        assert_eq!(event.to_rfc3339(), "2019-08-22T20:50:59.522Z");
        let whole = Timestamp::parse("2015-05-01T10:20:31Z").unwrap();
        assert_eq!(whole.to_rfc3339(), "2015-05-01T10:20:31Z");
        let offset = Timestamp::parse("2015-05-01T12:20:31+02:00").unwrap();
        assert_eq!(offset, whole);
        for bad in [
            "",
            "yesterday",
            "2015-13-01T10:20:31Z",
            "2015-05-01T10:20:31.Z",
            "2015-05-01",
        ] {
            assert!(Timestamp::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn durations_including_infinite() {
        assert_eq!(
            IsoDuration::parse("P10675199DT2H48M5.4775807S"),
            Some(IsoDuration::Infinite)
        );
        assert_eq!(
            IsoDuration::parse("PT1H30M"),
            Some(IsoDuration::Finite(Duration::from_secs(5_400)))
        );
        assert_eq!(
            IsoDuration::parse("P7D"),
            Some(IsoDuration::Finite(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            IsoDuration::parse("PT0.5S"),
            Some(IsoDuration::Finite(Duration::from_millis(500)))
        );
        assert_eq!(
            IsoDuration::parse("P99999999999999999999999999999999D"),
            Some(IsoDuration::Infinite)
        );
        for bad in ["", "P", "PT", "1H", "PT1X", "PT1.2.3S", "PTH"] {
            assert!(IsoDuration::parse(bad).is_none(), "{bad:?} parsed");
        }
        assert_eq!(
            IsoDuration::Finite(Duration::from_secs(5_400)).to_iso(),
            "PT1H30M"
        );
        assert_eq!(
            IsoDuration::Finite(Duration::from_secs(86_400 + 5)).to_iso(),
            "P1DT5S"
        );
        assert_eq!(IsoDuration::Finite(Duration::ZERO).to_iso(), "PT0S");
    }

    #[test]
    fn integers_as_numbers_or_strings() {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default, deserialize_with = "int::opt_i64")]
            n: Option<i64>,
        }
        let parse = |json: &str| serde_json::from_str::<Probe>(json).map(|p| p.n);
        assert_eq!(parse(r#"{"n": 1813}"#).unwrap(), Some(1813));
        assert_eq!(parse(r#"{"n": "1813"}"#).unwrap(), Some(1813));
        assert_eq!(parse(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(parse(r#"{}"#).unwrap(), None);
        assert!(parse(r#"{"n": "lots"}"#).is_err());
        assert!(parse(r#"{"n": 1.5}"#).is_err());
    }
}
