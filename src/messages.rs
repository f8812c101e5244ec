//! Wire types of the RabbitMQ protocol (DESIGN §4) and their checks.

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

/// Turns a result's `outputs` into the list the stage record keeps: an object becomes one
/// output, `null` one `null` output, and a list is taken as it is.
pub fn normalize_outputs(outputs: Value) -> Result<Vec<Value>, String> {
    let list = match outputs {
        Value::Object(_) | Value::Null => vec![outputs],
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "outputs must be an object, a list or null, not {}",
                kind(&other)
            ));
        }
    };
    if list.len() > MAX_TASK_OUTPUTS {
        return Err(format!(
            "a task may return at most {MAX_TASK_OUTPUTS} outputs, got {}",
            list.len()
        ));
    }
    for (i, item) in list.iter().enumerate() {
        match item {
            Value::Null => {}
            Value::Object(map) => {
                check_keys(map, 1).map_err(|e| format!("output {}: {e}", i + 1))?
            }
            other => {
                return Err(format!(
                    "output {} must be an object or null, not {}",
                    i + 1,
                    kind(other)
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

/// Refuses keys that MongoDB would refuse or misread, and nesting deeper than [`MAX_DEPTH`].
pub fn check_keys(map: &Map<String, Value>, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    for (key, value) in map {
        if key.starts_with('$') || key.contains('\0') || key.is_empty() {
            return Err(format!(
                "key '{}' is not allowed (empty, starts with '$' or holds NUL)",
                key.escape_debug()
            ));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(format!("a key is longer than {MAX_KEY_LEN} bytes"));
        }
        check_value(value, depth + 1)?;
    }
    Ok(())
}

fn check_value(value: &Value, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    match value {
        Value::Object(map) => check_keys(map, depth),
        Value::Array(items) => items.iter().try_for_each(|v| check_value(v, depth + 1)),
        Value::String(text) if text.len() > MAX_STRING_LEN => Err(format!(
            "a string of {} bytes exceeds the limit of {MAX_STRING_LEN}",
            text.len()
        )),
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
        assert!(check_keys(&long_key, 1).is_err());
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
