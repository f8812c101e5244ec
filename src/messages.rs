//! Wire types of the RabbitMQ protocol (docs/protocol.md, "Messages") and their checks.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{JobId, JobStatus, StageId, TaskId, Timestamp};
// The checks on outputs and configs are rules of the domain; the wire takes them from there.
pub use crate::domain::values::{
    MAX_DEPTH, MAX_KEY_LEN, MAX_STRING_LEN, MAX_TASK_OUTPUTS, ValueError, check_keys,
    normalize_outputs,
};

/// The AMQP `type` property of a dispatch.
pub const DISPATCH_TYPE: &str = "stage-dispatch";
/// The AMQP `type` property of a result.
pub const RESULT_TYPE: &str = "stage-result";
/// The AMQP `type` property of a job event.
pub const EVENT_TYPE: &str = "job-event";
/// Longest `log` or `error` text kept from a result, in bytes; longer text is cut.
pub const MAX_LOG_LEN: usize = 64 * 1024;

/// The worker a dispatch is meant for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerRef {
    pub id: String,
    pub name: String,
}

/// stage-dispatch: coordinator → worker, published to `P.dispatch` with routing key `worker.id`,
/// `message_id` and `correlation_id` = `task_id`, and `reply_to` = the job's result partition
/// `P.results.NN` (`00`–`15`, the FNV-1a hash of `job_id` modulo 16; the same for every
/// dispatch of a job).
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

/// stage-result: worker → `reply_to`, through the default exchange, with `correlation_id` =
/// `task_id`. `reply_to` names a result partition `P.results.NN`; a result sent to the shared
/// `P.results` is served too.
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
    fn result_with_bad_ids_does_not_parse() {
        let bad = json!({"task_id": "nope", "job_id": "1B2M2Y8AsgTpgAmY7PhCfg", "outputs": null});
        assert!(serde_json::from_value::<StageResult>(bad).is_err());
        let good = json!({"task_id": "b57caaac4e5b4444a4169ce784a35201", "job_id": "1B2M2Y8AsgTpgAmY7PhCfg", "outputs": null, "error": null});
        assert!(serde_json::from_value::<StageResult>(good).is_ok());
    }

    #[test]
    fn long_logs_are_clipped_on_a_char_boundary() {
        let text = "é".repeat(MAX_LOG_LEN);
        let clipped = clip_log(Some(text)).expect("kept");
        assert!(clipped.len() <= MAX_LOG_LEN + 10);
    }
}
