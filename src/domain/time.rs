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

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
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
    fn text_order_is_time_order() {
        let a = Timestamp::parse("2020-07-16T10:15:53.000001Z").expect("valid");
        let b = a.plus_seconds(3600);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }
}
