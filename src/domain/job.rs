//! The job document: what a run of a pipeline has done so far.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::ids::{JobId, StageId, TaskId};
use super::pipeline::StageSpec;
use super::time::Timestamp;

/// The schema of a stage's `outputs`: a list of objects and `null`s.
fn output_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": ["object", "null"]}})
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Created; nothing dispatched yet.
    Pending,
    Running,
    /// An operator paused it: nothing new is dispatched until it is resumed; results of tasks
    /// in flight are recorded, and what they would set off waits.
    Paused,
    /// A task of a stage with `"on_failure": "hold"` used up its attempts: nothing new is
    /// dispatched until an operator posts the task's outputs or resumes the job.
    Held,
    Finished,
    Failed,
    Aborted,
}

impl JobStatus {
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Running | Self::Paused | Self::Held
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Held => "held",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }
}

/// Where one task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Recorded and (about to be) published; waiting for a result.
    Pending,
    /// Recorded but not published: its job is paused or held. Its attempt is published, with
    /// a fresh deadline, when the job runs again.
    Queued,
    /// A result arrived.
    Done,
    /// The last attempt failed.
    Failed,
    /// Its last attempt failed in a stage that holds, and an operator posted its outputs.
    Skipped,
}

impl TaskStatus {
    /// Whether the task has outputs the stage can end with.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Skipped)
    }
}

/// One task of a stage: one input set for the stage's worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskRecord {
    /// The id of the current attempt.
    pub task_id: TaskId,
    /// Ids of earlier attempts, so late results for them are recognised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_ids: Vec<TaskId>,
    pub status: TaskStatus,
    pub attempt: u32,
    pub inputs: Map<String, Value>,
    pub configs: Map<String, Value>,
    /// When the current attempt was recorded (the outbox time).
    pub issued: Timestamp,
    /// When the current attempt must have answered by.
    pub deadline: Timestamp,
    /// Set once the dispatch of the current attempt is confirmed by the broker (the outbox mark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<Option<Map<String, Value>>>>")]
    pub outputs: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Timestamp>,
}

impl TaskRecord {
    /// Whether `task_id` is this task's current attempt or one of its earlier ones.
    pub fn issued_as(&self, task_id: &TaskId) -> bool {
        &self.task_id == task_id || self.previous_ids.contains(task_id)
    }
}

/// One stage of a job: `init`, a stage in flight, or a stage that has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageRecord {
    pub id: StageId,
    /// Each entry is an object or `null`.
    #[schemars(schema_with = "output_list_schema")]
    pub outputs: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run whose record of this stage a rerun from a later stage reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

impl StageRecord {
    /// The `init` stage: the input file as the single output `init_source`.
    pub fn init(file_name: &str, now: Timestamp) -> Self {
        let mut output = Map::new();
        output.insert("init_source".into(), Value::String(file_name.to_owned()));
        Self {
            id: StageId::init(),
            outputs: vec![Value::Object(output)],
            worker_id: None,
            tasks: Vec::new(),
            started: None,
            completed: Some(now),
            log: None,
            error: None,
            reused_from: None,
        }
    }
}

/// A job: the full record kept while it runs and archived when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    /// Stored as `_id`; read straight from the stored bytes under that name.
    #[serde(alias = "_id")]
    pub id: JobId,
    /// Random per run; task ids derive from it.
    pub run_id: String,
    pub machine_id: String,
    pub pipeline_id: String,
    pub hash: String,
    pub file_name: String,
    pub status: JobStatus,
    /// `init` and the stages that have ended. Shared: an ended stage never changes, and a
    /// fan-out's is megabytes that every copy of the job would otherwise repeat.
    pub stages: Vec<Arc<StageRecord>>,
    /// The stage in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_stage: Option<StageRecord>,
    pub created: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Timestamp>,
    /// Why the job failed or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The pipeline's stages as they were when the job started, so edits do not disturb it.
    pub pipeline: Vec<StageSpec>,
    /// The machine's configs as they were when the job started.
    #[serde(default)]
    pub machine_configs: Map<String, Value>,
    /// Compare-and-set counter: every write requires the version it read and bumps it.
    pub version: i64,
}

impl Job {
    /// A new pending job for `file_name` on a machine running `pipeline`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        machine_id: &str,
        hash: &str,
        file_name: &str,
        pipeline_id: &str,
        pipeline: Vec<StageSpec>,
        machine_configs: Map<String, Value>,
        run_id: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id: JobId::derive(machine_id, hash),
            run_id,
            machine_id: machine_id.to_owned(),
            pipeline_id: pipeline_id.to_owned(),
            hash: hash.to_owned(),
            file_name: file_name.to_owned(),
            status: JobStatus::Pending,
            stages: vec![Arc::new(StageRecord::init(file_name, now))],
            current_stage: None,
            created: now,
            started: None,
            completed: None,
            error: None,
            pipeline,
            machine_configs,
            version: 0,
        }
    }
}

impl Job {
    /// Whether `task_id` was issued by this run (any attempt of any stage).
    pub fn issued(&self, task_id: &TaskId) -> bool {
        self.stage_issuing(task_id).is_some()
    }

    /// The task of the stage in flight that `task_id` names (any attempt).
    pub fn current_task(&self, task_id: &TaskId) -> Option<&TaskRecord> {
        let stage = self.current_stage.as_ref()?;
        stage.tasks.iter().find(|t| t.issued_as(task_id))
    }

    /// The stage of this run that issued `task_id` (any attempt), ended or in flight.
    pub fn stage_issuing(&self, task_id: &TaskId) -> Option<&StageRecord> {
        self.stages
            .iter()
            .map(Arc::as_ref)
            .chain(self.current_stage.iter())
            .find(|s| s.tasks.iter().any(|t| t.issued_as(task_id)))
    }
}

/// The job as the REST API shows it: the seed's keys plus extensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobView {
    pub id: JobId,
    /// This run of the job: a rerun of the same file keeps the id and gets a new run id.
    pub run_id: String,
    pub machine_id: String,
    pub status: JobStatus,
    pub stages: Vec<StageRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_stage: Option<StageRecord>,
    pub pipeline_id: String,
    pub created: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub hash: String,
    pub file_name: String,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id.clone(),
            run_id: job.run_id.clone(),
            machine_id: job.machine_id.clone(),
            status: job.status,
            stages: job.stages.iter().map(|s| StageRecord::clone(s)).collect(),
            current_stage: job.current_stage.clone(),
            pipeline_id: job.pipeline_id.clone(),
            created: job.created,
            started: job.started,
            completed: job.completed,
            error: job.error.clone(),
            hash: job.hash.clone(),
            file_name: job.file_name.clone(),
        }
    }
}
