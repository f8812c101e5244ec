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
/// The AMQP `type` property of a cleanup event.
pub const CLEANUP_TYPE: &str = "job-cleanup";
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

/// job-cleanup: on `P.events` with routing key `job.cleanup` when a job ended, naming every
/// output its intermediate stages produced (every stage but `init` and the pipeline's last;
/// stages a rerun reused were named when the run that did them ended), so that the files they
/// name can be deleted. A job with many outputs sends several parts, each under 1 MiB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobCleanup {
    pub job_id: JobId,
    pub run_id: String,
    /// How the job ended: `finished`, `failed` or `aborted`.
    pub status: JobStatus,
    /// This part, from 1, of `parts`.
    pub part: usize,
    pub parts: usize,
    pub stages: Vec<CleanupStage>,
    pub at: Timestamp,
}

/// The outputs of one intermediate stage (or a slice of them, when a part holds only some).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CleanupStage {
    pub stage_id: StageId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Each entry is an object or `null`: the outputs of the stage's tasks in task order (of the
    /// tasks that finished, for a stage that did not).
    #[schemars(with = "Vec<Option<Map<String, Value>>>")]
    pub outputs: Vec<Value>,
}

/// Most bytes of outputs one cleanup part carries.
pub const CLEANUP_PART_BYTES: usize = 1024 * 1024;

/// The outputs of `job`'s intermediate stages, in parts of at most `budget` bytes of outputs
/// each (an output larger than the budget goes alone); no part when there is nothing to name.
pub fn cleanup_parts(job: &crate::domain::Job, budget: usize) -> Vec<Vec<CleanupStage>> {
    let last = job.pipeline.len().checked_sub(1);
    let mut parts: Vec<Vec<CleanupStage>> = Vec::new();
    let mut current: Vec<CleanupStage> = Vec::new();
    let mut bytes = 0;
    let intermediate = job
        .stages
        .iter()
        .filter(|s| s.reused_from.is_none() && s.id.index().is_some_and(|i| Some(i) != last));
    for stage in intermediate {
        // A stage that did not complete has no outputs of its own: its finished tasks' are named.
        let outputs: Vec<&Value> = if stage.completed.is_some() && stage.error.is_none() {
            stage.outputs.iter().collect()
        } else {
            stage
                .tasks
                .iter()
                .flat_map(|t| t.outputs.iter().flatten())
                .collect()
        };
        for output in outputs.into_iter().filter(|o| !o.is_null()) {
            let size = crate::domain::size::json_size(output);
            if bytes + size > budget && bytes > 0 {
                parts.push(std::mem::take(&mut current));
                bytes = 0;
            }
            match current.last_mut() {
                Some(entry) if entry.stage_id == stage.id => entry.outputs.push(output.clone()),
                _ => current.push(CleanupStage {
                    stage_id: stage.id.clone(),
                    worker_id: stage.worker_id.clone(),
                    outputs: vec![output.clone()],
                }),
            }
            bytes += size;
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
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

    use crate::domain::Event;
    use crate::fakes::{answer_first, applied, seed_job};

    /// The seed's pipeline run to stage 04 (two tables), with `end` applied last.
    fn seed_run(end: Option<Event>) -> crate::domain::Job {
        let mut job = applied(&seed_job("r"), Event::Start, 1).0;
        let tables = vec![
            json!({"unique_id": "a", "result_table": "ta"}),
            json!({"unique_id": "b", "result_table": "tb"}),
        ];
        job = answer_first(&job, vec![json!({"csv_file": "c"})], 2);
        job = answer_first(&job, vec![json!({"output_csv": "o"})], 3);
        job = answer_first(&job, tables, 4);
        job = answer_first(&job, vec![json!({"sink": "s1"})], 6);
        match end {
            Some(event) => applied(&job, event, 7).0,
            None => job,
        }
    }

    fn named(parts: &[Vec<CleanupStage>]) -> Vec<(String, Value)> {
        parts
            .iter()
            .flatten()
            .flat_map(|s| {
                s.outputs
                    .iter()
                    .map(|o| (s.stage_id.as_str().to_owned(), o.clone()))
            })
            .collect()
    }

    #[test]
    fn cleanup_names_the_intermediate_outputs_and_not_the_last_stages() {
        let aborted = seed_run(Some(Event::Abort));
        let parts = cleanup_parts(&aborted, CLEANUP_PART_BYTES);
        assert_eq!(parts.len(), 1);
        let stages: Vec<&str> = parts[0].iter().map(|s| s.stage_id.as_str()).collect();
        assert_eq!(
            stages,
            ["01", "02", "03"],
            "04 is the pipeline's last stage"
        );
        assert_eq!(parts[0][2].outputs.len(), 2);
        assert_eq!(parts[0][0].worker_id.as_deref(), Some("import-csv"));
        // A stage a rerun reused was named when the run that did it ended.
        let mut rerun = aborted.clone();
        let mut reused = (*rerun.stages[1]).clone();
        reused.reused_from = Some("r0".into());
        rerun.stages[1] = std::sync::Arc::new(reused);
        let stages: Vec<String> = named(&cleanup_parts(&rerun, CLEANUP_PART_BYTES))
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(stages, ["02", "03", "03"]);
    }

    #[test]
    fn cleanup_splits_into_parts_under_the_budget_and_keeps_every_output_in_order() {
        let job = seed_run(Some(Event::Abort));
        let whole = named(&cleanup_parts(&job, CLEANUP_PART_BYTES));
        let parts = cleanup_parts(&job, 30);
        assert!(parts.len() >= 3, "{parts:?}");
        assert_eq!(named(&parts), whole);
        for part in &parts {
            let bytes: usize = part
                .iter()
                .flat_map(|s| &s.outputs)
                .map(crate::domain::size::json_size)
                .sum();
            assert!(
                bytes <= 30 || part.iter().map(|s| s.outputs.len()).sum::<usize>() == 1,
                "{part:?}"
            );
        }
    }

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
