//! What changed between two reads of a job: the transitions a watcher is told of (`GET
//! /jobs/{job}/events`; docs/semantics.md, "Watching a job"). Pure: two snapshots in, the
//! changes in the order they happened out, so any replica can tell any job's story from what
//! it reads, whichever replica wrote it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ids::{JobId, StageId, TaskId};
use super::job::{Job, JobStatus, StageRecord, TaskStatus};
use super::time::Timestamp;

/// One transition of a job, as the event stream sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobChange {
    /// The SSE event name: `status`, `stage.started`, `result.recorded` or `stage.completed`.
    pub event: ChangeKind,
    pub job_id: JobId,
    pub run_id: String,
    /// The job's status after the change.
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_id: Option<StageId>,
    /// For `result.recorded`: the task (its current attempt's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// For `result.recorded`: the task's status after the result (`done`, `failed`,
    /// `skipped`, or `pending`/`queued` for a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<TaskStatus>,
    /// For `stage.started`: how many tasks the stage has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<usize>,
    /// For `status`: the job's error, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the change happened, as the job records it (the read time when it does not).
    pub at: Timestamp,
}

/// The kinds of [`JobChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChangeKind {
    /// The job's status: sent first, and whenever it changes.
    #[serde(rename = "status")]
    Status,
    #[serde(rename = "stage.started")]
    StageStarted,
    /// A task got a result (or an error, or a timeout: a new attempt or its final failure),
    /// or was skipped.
    #[serde(rename = "result.recorded")]
    ResultRecorded,
    #[serde(rename = "stage.completed")]
    StageCompleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::StageStarted => "stage.started",
            Self::ResultRecorded => "result.recorded",
            Self::StageCompleted => "stage.completed",
        }
    }
}

/// The first change a watcher gets: where the job is now.
pub fn current(job: &Job, now: Timestamp) -> JobChange {
    let mut change = JobChange::new(job, ChangeKind::Status, now);
    change.stage_id = job.current_stage.as_ref().map(|s| s.id.clone());
    change.error = job.error.clone();
    change
}

/// The changes from `before` to `after`, in the order they happened: a status that makes the
/// job run (a start, a resume) comes before what the run then did, a status that pauses, holds
/// or ends it comes after. Within a stage, results come in task order. A different run of the
/// same job (a rerun) starts its story over: its status, then its stages.
pub fn between(before: &Job, after: &Job, now: Timestamp) -> Vec<JobChange> {
    let mut changes = Vec::new();
    let same_run = before.run_id == after.run_id;
    let status_changed = !same_run || before.status != after.status;
    let status = || {
        let mut status = JobChange::new(after, ChangeKind::Status, after.completed.unwrap_or(now));
        status.error = after.error.clone();
        status
    };
    let runs_on = matches!(after.status, JobStatus::Pending | JobStatus::Running);
    if status_changed && runs_on {
        changes.push(status());
    }
    let empty = Vec::new();
    let (old_stages, old_current) = if same_run {
        (&before.stages, before.current_stage.as_ref())
    } else {
        (&empty, None)
    };
    // Stages that ended since: each, with what happened to its tasks, then its end.
    // `init` is no stage of the pipeline: a rerun's is not told.
    let ended = after.stages.iter().skip(old_stages.len());
    for stage in ended.filter(|s| s.id.index().is_some()) {
        let was_current = old_current.filter(|c| c.id == stage.id);
        if was_current.is_none() {
            changes.push(started(after, stage, now));
        }
        results(after, was_current, stage, &mut changes);
        let mut ended = JobChange::new(
            after,
            ChangeKind::StageCompleted,
            stage.completed.unwrap_or(now),
        );
        ended.stage_id = Some(stage.id.clone());
        changes.push(ended);
    }
    if let Some(stage) = &after.current_stage {
        let was = old_current.filter(|c| c.id == stage.id);
        if was.is_none() {
            changes.push(started(after, stage, now));
        }
        results(after, was, stage, &mut changes);
    }
    if status_changed && !runs_on {
        changes.push(status());
    }
    changes
}

impl JobChange {
    fn new(job: &Job, event: ChangeKind, at: Timestamp) -> Self {
        Self {
            event,
            job_id: job.id.clone(),
            run_id: job.run_id.clone(),
            status: job.status,
            stage_id: None,
            task_id: None,
            task_status: None,
            tasks: None,
            error: None,
            at,
        }
    }
}

fn started(job: &Job, stage: &StageRecord, now: Timestamp) -> JobChange {
    let mut change = JobChange::new(job, ChangeKind::StageStarted, stage.started.unwrap_or(now));
    change.stage_id = Some(stage.id.clone());
    change.tasks = Some(stage.tasks.len());
    change
}

/// A `result.recorded` for every task of `stage` that got a result since `before`: it became
/// done, failed or skipped, or an attempt in flight failed and gave way to the next one (every
/// task that has moved on from its first attempt's pending, when `before` is `None`). An
/// operator's resume (queued to pending, failed to a fresh attempt) is no result.
fn results(
    job: &Job,
    before: Option<&StageRecord>,
    stage: &StageRecord,
    changes: &mut Vec<JobChange>,
) {
    for (index, task) in stage.tasks.iter().enumerate() {
        let ended = matches!(
            task.status,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Skipped
        );
        let moved = match before.and_then(|b| b.tasks.get(index)) {
            Some(old) => {
                (ended && old.status != task.status)
                    || (old.status == TaskStatus::Pending && old.attempt != task.attempt)
            }
            None => task.status != TaskStatus::Pending || task.attempt > 1,
        };
        if moved {
            let mut change = JobChange::new(
                job,
                ChangeKind::ResultRecorded,
                task.completed.unwrap_or(task.issued),
            );
            change.stage_id = Some(stage.id.clone());
            change.task_id = Some(task.task_id.clone());
            change.task_status = Some(task.status);
            changes.push(change);
        }
    }
}

#[cfg(test)]
#[path = "changes_tests.rs"]
mod tests;
