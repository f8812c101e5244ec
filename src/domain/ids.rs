//! Validated identifiers: a value of these types has been checked once, at the edge.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} '{value}' is invalid: {reason}")]
pub struct IdError {
    kind: &'static str,
    value: String,
    reason: &'static str,
}

impl IdError {
    fn new(kind: &'static str, value: &str, reason: &'static str) -> Self {
        // Keep error messages short even when the input is not.
        let value: String = value.chars().take(80).collect();
        Self {
            kind,
            value,
            reason,
        }
    }
}

/// A job id: URL-safe base64 without padding of MD5(`machine_id` + `hash`), 22 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// Derives the id of the job that runs `machine_id` on the file with `hash`.
    pub fn derive(machine_id: &str, hash: &str) -> Self {
        let mut md5 = Md5::new();
        md5.update(machine_id.as_bytes());
        md5.update(hash.as_bytes());
        Self(URL_SAFE_NO_PAD.encode(md5.finalize()))
    }

    /// Accepts exactly the 22-character URL-safe alphabet form that [`JobId::derive`] produces.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        if value.len() != 22 {
            return Err(IdError::new("job id", value, "must be 22 characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(IdError::new(
                "job id",
                value,
                "must use the URL-safe base64 alphabet",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task id: 32 lowercase hexadecimal characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// Derives the id of one attempt of one task. The run id is random per job run, so ids are
    /// unguessable and never repeat across runs, while the derivation itself stays pure: applying
    /// the same event twice issues the same ids.
    pub fn derive(run_id: &str, stage_id: &StageId, index: usize, attempt: u32) -> Self {
        let mut md5 = Md5::new();
        md5.update(run_id.as_bytes());
        md5.update(format!(":{stage_id}:{index}:{attempt}").as_bytes());
        let digest = md5.finalize();
        let mut hex = String::with_capacity(32);
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        Self(hex)
    }

    pub fn parse(value: &str) -> Result<Self, IdError> {
        if value.len() != 32 {
            return Err(IdError::new("task id", value, "must be 32 characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdError::new(
                "task id",
                value,
                "must be lowercase hexadecimal",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stage id: `init`, or the 1-based position of a pipeline stage as two digits (`01`, `02`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StageId(String);

impl StageId {
    pub const INIT: &'static str = "init";

    pub fn init() -> Self {
        Self(Self::INIT.to_owned())
    }

    /// The id of the pipeline stage at zero-based `index`.
    pub fn for_index(index: usize) -> Self {
        Self(format!("{:02}", index + 1))
    }

    pub fn parse(value: &str) -> Result<Self, IdError> {
        if value == Self::INIT {
            return Ok(Self::init());
        }
        if value.len() >= 2 && value.bytes().all(|b| b.is_ascii_digit()) && value != "00" {
            let number: usize = value
                .parse()
                .map_err(|_| IdError::new("stage id", value, "is too large"))?;
            if number >= 1 && Self::for_index(number - 1).0 == value {
                return Ok(Self(value.to_owned()));
            }
        }
        Err(IdError::new(
            "stage id",
            value,
            "must be 'init' or a two-digit 1-based number",
        ))
    }

    /// Zero-based pipeline index, or `None` for `init`.
    pub fn index(&self) -> Option<usize> {
        self.0.parse::<usize>().ok().and_then(|n| n.checked_sub(1))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_id {
    ($name:ident, $pattern:expr, $description:expr) => {
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description
                })
            }
        }
    };
}

string_id!(
    JobId,
    "^[A-Za-z0-9_-]{22}$",
    "URL-safe base64 without padding of MD5(machine_id + hash)"
);
string_id!(
    TaskId,
    "^[0-9a-f]{32}$",
    "32 lowercase hexadecimal characters"
);
string_id!(
    StageId,
    "^(init|[0-9]{2,})$",
    "'init', or the 1-based stage position as two digits"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_is_url_safe_base64_of_md5() {
        let id = JobId::derive("735d39eb6dc94acdadc9d019ff54fb1f", "abc");
        assert_eq!(id.as_str().len(), 22);
        assert!(JobId::parse(id.as_str()).is_ok());
        // MD5("") is d41d8cd98f00b204e9800998ecf8427e, whose URL-safe base64 is known.
        assert_eq!(JobId::derive("", "").as_str(), "1B2M2Y8AsgTpgAmY7PhCfg");
    }

    #[test]
    fn job_id_parse_refuses_bad_alphabet_and_length() {
        assert!(JobId::parse("short").is_err());
        assert!(JobId::parse("1B2M2Y8AsgTpgAmY7PhCf/").is_err());
        assert!(JobId::parse("1B2M2Y8AsgTpgAmY7PhCfg=").is_err());
    }

    #[test]
    fn task_ids_are_deterministic_and_distinct_per_attempt() {
        let stage = StageId::for_index(0);
        let a = TaskId::derive("run", &stage, 0, 1);
        assert_eq!(a, TaskId::derive("run", &stage, 0, 1));
        assert_ne!(a, TaskId::derive("run", &stage, 0, 2));
        assert_ne!(a, TaskId::derive("run", &stage, 1, 1));
        assert_ne!(a, TaskId::derive("other", &stage, 0, 1));
        assert!(TaskId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn task_id_parse_refuses_uppercase() {
        assert!(TaskId::parse("B57CAAAC4E5B4444A4169CE784A35201").is_err());
        assert!(TaskId::parse("b57caaac4e5b4444a4169ce784a35201").is_ok());
    }

    #[test]
    fn stage_ids_round_trip() {
        assert_eq!(StageId::for_index(0).as_str(), "01");
        assert_eq!(StageId::for_index(11).as_str(), "12");
        assert_eq!(StageId::parse("03").ok().and_then(|s| s.index()), Some(2));
        assert!(StageId::parse("init").is_ok_and(|s| s.index().is_none()));
        for bad in ["0", "00", "1", "x1", "001"] {
            assert!(StageId::parse(bad).is_err(), "{bad}");
        }
    }
}
