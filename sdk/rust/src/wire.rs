//! The messages as a worker sees them (docs/protocol.md, "Messages"). The coordinator's own types
//! live in the service; these are kept apart so a worker does not link the service, and
//! `tests/schemas.rs` checks them against the committed JSON Schemas so the two cannot drift.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The AMQP `type` property of a dispatch.
pub const DISPATCH_TYPE: &str = "stage-dispatch";
/// The AMQP `type` property of a result.
pub const RESULT_TYPE: &str = "stage-result";

/// The worker a dispatch is meant for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRef {
    pub id: String,
    pub name: String,
}

/// A stage-dispatch: one task for this worker. Every field is required by the protocol; fields
/// added to it later are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    /// 32 lowercase hexadecimal characters; echoed in the result.
    pub task_id: String,
    /// Echoed in the result.
    pub job_id: String,
    /// The run of the job this task belongs to; echoed in the result.
    pub run_id: String,
    pub machine_id: String,
    pub pipeline_id: String,
    /// `01`, `02`, …
    pub stage_id: String,
    pub worker: WorkerRef,
    /// The task's input fields, mapped from earlier stages' outputs.
    pub inputs: Map<String, Value>,
    /// The worker's configs overlaid by the machine's.
    pub configs: Map<String, Value>,
    /// 1 for the first attempt; a retry is a new dispatch with a new `task_id`.
    pub attempt: u32,
    /// RFC 3339: when the coordinator stops waiting for this attempt.
    pub deadline: String,
}

/// A stage-result, published to the dispatch's `reply_to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    pub task_id: String,
    pub job_id: String,
    /// The dispatch's `run_id`, echoed, so a late result of an earlier run is told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// An object, a list of objects and `null`s, or `null`.
    #[serde(default)]
    pub outputs: Value,
    #[serde(default)]
    pub log: Option<String>,
    /// A non-null string reports a failed attempt.
    #[serde(default)]
    pub error: Option<String>,
}

/// The fields of a job event (`P.events`) a worker reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobEvent {
    pub job_id: String,
    /// Absent only from coordinators older than run ids.
    #[serde(default)]
    pub run_id: Option<String>,
    pub status: String,
}
