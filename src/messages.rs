//! Wire types of the RabbitMQ protocol (docs/protocol.md, "Messages") and their checks.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{JobId, JobStatus, StageId, TaskId, Timestamp};

/// The AMQP `type` property of a dispatch.
pub const DISPATCH_TYPE: &str = "stage-dispatch";
/// The AMQP `type` property of a result.
pub const RESULT_TYPE: &str = "stage-result";
/// The AMQP `type` property of a job event.
pub const EVENT_TYPE: &str = "job-event";
/// Most outputs one task may return.
pub const MAX_TASK_OUTPUTS: usize = 100_000;
/// Deepest nesting accepted in outputs, inputs and configs.
pub const MAX_DEPTH: usize = 32;
/// Longest `log` or `error` text kept from a result, in bytes; longer text is cut.
pub const MAX_LOG_LEN: usize = 64 * 1024;
/// Longest string value accepted in outputs and configs, in bytes.
pub const MAX_STRING_LEN: usize = 64 * 1024;
/// Longest key accepted in outputs and configs, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The worker a dispatch is meant for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerRef {
    pub id: String,
    pub name: String,
}

/// stage-dispatch: coordinator → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageDispatch {
    pub task_id: TaskId,
    pub job_id: JobId,
    /// The run of the job this task belongs to; a worker may echo it in its result.
    pub run_id: String,
    pub machine_id: String,
    pub pipeline_id: String,
    pub stage_id: StageId,
    pub worker: WorkerRef,
    pub inputs: Map<String, Value>,
    pub configs: Map<String, Value>,
    pub attempt: u32,
    pub deadline: Timestamp,
}

/// stage-result: worker → `reply_to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageResult {
    pub task_id: TaskId,
    pub job_id: JobId,
    /// The dispatch's `run_id`, echoed (optional): a result of another run is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// An object, a list of objects and `null`s, or `null`.
    #[serde(default)]
    #[schemars(schema_with = "outputs_schema")]
    pub outputs: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// A non-null string reports a failed attempt.
    #[serde(default)]
    pub error: Option<String>,
}

/// A job event on `P.events` with routing key `job.<status>` or `stage.completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobEvent {
    pub job_id: JobId,
    /// The run of the job the event is about.
    pub run_id: String,
    pub status: JobStatus,
    pub stage_id: Option<StageId>,
    pub at: Timestamp,
}

/// The schema of a result's `outputs`: an object, a list of objects and `null`s, or `null`.
pub fn outputs_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "An object, a list of objects and nulls, or null",
        "oneOf": [
            {"type": "object"},
            {"type": "array", "items": {"type": ["object", "null"]}},
            {"type": "null"}
        ]
    })
}

/// A value that cannot be taken: what is wrong, and where (a JSON path relative to the value
/// checked, such as `.a.b[2]`; empty for the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub path: String,
    pub message: String,
}

impl ValueError {
    fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} (at {})", self.message, self.path)
        }
    }
}

/// Turns a result's `outputs` into the list the stage record keeps: an object becomes one
/// output, `null` one `null` output, and a list is taken as it is.
pub fn normalize_outputs(outputs: Value) -> Result<Vec<Value>, ValueError> {
    let listed = outputs.is_array();
    let list = match outputs {
        Value::Object(_) | Value::Null => vec![outputs],
        Value::Array(items) => items,
        other => {
            return Err(ValueError::new(
                "",
                format!(
                    "outputs must be an object, a list or null, not {}",
                    kind(&other)
                ),
            ));
        }
    };
    if list.len() > MAX_TASK_OUTPUTS {
        return Err(ValueError::new(
            "",
            format!(
                "a task may return at most {MAX_TASK_OUTPUTS} outputs, got {}",
                list.len()
            ),
        ));
    }
    for (i, item) in list.iter().enumerate() {
        let path = if listed {
            format!("[{i}]")
        } else {
            String::new()
        };
        match item {
            Value::Null => {}
            Value::Object(map) => check_map(map, &path, 1)?,
            other => {
                return Err(ValueError::new(
                    &path,
                    format!("an output must be an object or null, not {}", kind(other)),
                ));
            }
        }
    }
    Ok(list)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Checks that `map` can be stored as it is: refuses keys that MongoDB would refuse or
/// misread, integers BSON cannot hold, long strings and keys, and nesting deeper than
/// [`MAX_DEPTH`]. The error's path is relative to `map`.
pub fn check_keys(map: &Map<String, Value>) -> Result<(), ValueError> {
    check_map(map, "", 1)
}

fn check_map(map: &Map<String, Value>, path: &str, depth: usize) -> Result<(), ValueError> {
    if depth > MAX_DEPTH {
        return Err(ValueError::new(
            path,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    for (key, value) in map {
        let shown: String = key.chars().take(64).collect();
        let inner = format!("{path}.{}", shown.escape_debug());
        if key.starts_with('$') || key.contains('\0') || key.is_empty() {
            return Err(ValueError::new(
                &inner,
                "a key may not be empty, start with '$' or hold NUL",
            ));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(ValueError::new(
                &inner,
                format!("a key is longer than {MAX_KEY_LEN} bytes"),
            ));
        }
        check_value(value, &inner, depth + 1)?;
    }
    Ok(())
}

fn check_value(value: &Value, path: &str, depth: usize) -> Result<(), ValueError> {
    if depth > MAX_DEPTH {
        return Err(ValueError::new(
            path,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    match value {
        Value::Object(map) => check_map(map, path, depth),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_value(v, &format!("{path}[{i}]"), depth + 1)),
        Value::String(text) if text.len() > MAX_STRING_LEN => Err(ValueError::new(
            path,
            format!(
                "a string of {} bytes exceeds the limit of {MAX_STRING_LEN}",
                text.len()
            ),
        )),
        // BSON has signed 64-bit integers and doubles only: a larger integer cannot be stored
        // as sent (and a double would silently change it), so it is refused.
        Value::Number(number) if number.is_u64() && number.as_i64().is_none() => {
            Err(ValueError::new(
                path,
                format!(
                    "the integer {number} is outside the signed 64-bit range the database stores; send it as a string"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Cuts `text` to at most [`MAX_LOG_LEN`] bytes on a character boundary.
pub fn clip_log(text: Option<String>) -> Option<String> {
    text.map(|mut t| {
        if t.len() > MAX_LOG_LEN {
            let mut end = MAX_LOG_LEN;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t.truncate(end);
            t.push_str(" …[cut]");
        }
        t
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn outputs_normalise_object_list_and_null() {
        assert_eq!(
            normalize_outputs(json!({"a": 1})),
            Ok(vec![json!({"a": 1})])
        );
        assert_eq!(normalize_outputs(Value::Null), Ok(vec![Value::Null]));
        assert_eq!(
            normalize_outputs(json!([{"a": 1}, null])),
            Ok(vec![json!({"a": 1}), Value::Null])
        );
        assert_eq!(normalize_outputs(json!([])), Ok(vec![]));
    }

    #[test]
    fn outputs_of_the_wrong_type_are_refused() {
        assert!(normalize_outputs(json!("x")).is_err());
        assert!(normalize_outputs(json!([1])).is_err());
        assert!(normalize_outputs(json!([{"$set": 1}])).is_err());
    }

    #[test]
    fn result_with_bad_ids_does_not_parse() {
        let bad = json!({"task_id": "nope", "job_id": "1B2M2Y8AsgTpgAmY7PhCfg", "outputs": null});
        assert!(serde_json::from_value::<StageResult>(bad).is_err());
        let good = json!({"task_id": "b57caaac4e5b4444a4169ce784a35201", "job_id": "1B2M2Y8AsgTpgAmY7PhCfg", "outputs": null, "error": null});
        assert!(serde_json::from_value::<StageResult>(good).is_ok());
    }

    #[test]
    fn long_strings_and_keys_are_refused() {
        assert!(normalize_outputs(json!({"a": "x".repeat(MAX_STRING_LEN + 1)})).is_err());
        assert!(normalize_outputs(json!({"a": "x".repeat(MAX_STRING_LEN)})).is_ok());
        let mut long_key = Map::new();
        long_key.insert("k".repeat(MAX_KEY_LEN + 1), json!(1));
        assert!(check_keys(&long_key).is_err());
    }

    #[test]
    fn integers_beyond_the_signed_64_bit_range_are_refused_with_their_path() {
        let error =
            normalize_outputs(json!([{"ok": 1}, {"a": {"b": [1, 18446744073709551615u64]}}]))
                .expect_err("refused");
        assert_eq!(error.path, "[1].a.b[1]");
        assert!(error.message.contains("18446744073709551615"), "{error}");
        assert!(normalize_outputs(json!({"a": i64::MAX, "b": i64::MIN, "c": 1e300})).is_ok());
        let configs = json!({"seed": 9223372036854775808u64});
        let error = check_keys(configs.as_object().expect("object")).expect_err("refused");
        assert_eq!(error.path, ".seed");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut value = json!(1);
        for _ in 0..40 {
            value = json!({"a": value});
        }
        assert!(normalize_outputs(value).is_err());
    }

    #[test]
    fn long_logs_are_clipped_on_a_char_boundary() {
        let text = "é".repeat(MAX_LOG_LEN);
        let clipped = clip_log(Some(text)).expect("kept");
        assert!(clipped.len() <= MAX_LOG_LEN + 10);
    }
}
