//! Times as the contract writes them: RFC 3339 in UTC, microseconds, `Z` suffix.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, stored and sent as `2020-07-16T10:15:53.278087Z`. The fixed width makes the
/// text form sort in time order, which the store relies on for range queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(Utc::now())
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// This time plus `seconds` (saturating on overflow).
    pub fn plus_seconds(&self, seconds: u64) -> Self {
        let delta = chrono::TimeDelta::try_seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
            .unwrap_or(chrono::TimeDelta::MAX);
        Self(self.0.checked_add_signed(delta).unwrap_or(self.0))
    }

    pub fn parse(value: &str) -> Result<Self, chrono::ParseError> {
        DateTime::parse_from_rfc3339(value).map(|t| Self::from(t.with_timezone(&Utc)))
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value.trunc_subsecs(6))
    }
}

/// The text form's length: `2020-07-16T10:15:53.278087Z`.
const TEXT_LEN: usize = 27;

impl Timestamp {
    /// The text form written digit by digit, for years 0 to 9999 (every job's): a job's record
    /// holds three times per task, and chrono's general formatter parsed its format string for
    /// each, the largest cost of writing a wide stage.
    fn fixed_text(&self) -> Option<[u8; TEXT_LEN]> {
        use chrono::{Datelike, Timelike};
        let t = self.0;
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        // A leap second shows as second 60, as chrono's own formatter writes it.
        let (second, nanos) = match t.nanosecond() {
            n if n >= 1_000_000_000 => (t.second() + 1, n - 1_000_000_000),
            n => (t.second(), n),
        };
        put(17, 2, second);
        put(20, 6, nanos / 1_000);
        Some(out)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fixed_text() {
            // Only ASCII digits and separators were written.
            Some(text) => f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
            None => write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.fixed_text() {
            Some(text) => match std::str::from_utf8(&text) {
                Ok(text) => serializer.serialize_str(text),
                Err(_) => serializer.collect_str(self),
            },
            None => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 in UTC with a Z suffix"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seed() {
        let t = Timestamp::parse("2020-07-16T10:15:53.278087Z").expect("valid");
        assert_eq!(t.to_string(), "2020-07-16T10:15:53.278087Z");
        let json = serde_json::to_string(&t).expect("serialises");
        assert_eq!(json, "\"2020-07-16T10:15:53.278087Z\"");
    }

    #[test]
    fn keeps_six_digits_and_utc() {
        let t = Timestamp::parse("2020-07-16T12:15:53.1+02:00").expect("valid");
        assert_eq!(t.to_string(), "2020-07-16T10:15:53.100000Z");
        assert!(Timestamp::now().to_string().ends_with('Z'));
    }

    #[test]
    fn the_fast_form_is_chrono_s_form() {
        let general = |t: &Timestamp| t.0.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        for text in [
            "2020-07-16T10:15:53.278087Z",
            "0001-01-01T00:00:00.000000Z",
            "9999-12-31T23:59:59.999999Z",
            "2016-12-31T23:59:60.500000Z",
            "2024-02-29T00:00:00.000001Z",
        ] {
            let t = Timestamp::parse(text).expect("valid");
            assert_eq!(t.to_string(), general(&t), "{text}");
            assert_eq!(t.to_string(), text);
        }
        let far = Timestamp(DateTime::<Utc>::MAX_UTC.trunc_subsecs(6));
        assert_eq!(far.to_string(), general(&far), "beyond 9999: chrono's form");
        let now = Timestamp::now();
        assert_eq!(now.to_string(), general(&now));
    }

    #[test]
    fn text_order_is_time_order() {
        let a = Timestamp::parse("2020-07-16T10:15:53.000001Z").expect("valid");
        let b = a.plus_seconds(3600);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }
}
