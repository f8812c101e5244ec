//! Observation: the metrics of each applied event, and the span fields of a handled event,
//! kept out of the write loop (README.md, "Metrics", lists them).

use tracing::field;

use crate::domain::{Effect, Event, Job, Notice, StageId, TaskId, TaskResult, TaskStatus};
use crate::meter;

/// One applied event of a batch, with what its metrics need from before it was applied.
#[derive(Debug)]
pub struct Step {
    /// The event's place in its batch.
    pub index: usize,
    /// The worker of the task the event is about (empty for job-level events).
    pub worker: String,
    /// The event put a failed or overdue task up for another attempt (dispatched, or queued
    /// in a paused or held job).
    pub retried: bool,
    /// The event started the job (a start, or the resume of a job paused before it started).
    pub started: bool,
    pub effects: Vec<Effect>,
}

impl Step {
    /// Describes `event`, applied to a job that had `started_before` or not, once applying it
    /// gave `job` and `effects`.
    pub fn new(
        index: usize,
        worker: String,
        event: &Event,
        started_before: bool,
        job: &Job,
        effects: Vec<Effect>,
    ) -> Self {
        // The attempt the event was about gave way to a newer one, pending or queued.
        let retried = match event {
            Event::Result(TaskResult { task_id, .. }) | Event::Timeout { task_id } => {
                job.current_task(task_id).is_some_and(|t| {
                    &t.task_id != task_id
                        && matches!(t.status, TaskStatus::Pending | TaskStatus::Queued)
                })
            }
            _ => false,
        };
        Self {
            index,
            worker,
            retried,
            started: !started_before && job.started.is_some(),
            effects,
        }
    }

    pub fn dispatches(&self) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::Dispatch { .. }))
    }
}

/// Records the task an event is about on the current span, once per handled event.
pub fn note_task(event: &Event) {
    if let Event::Result(TaskResult { task_id, .. }) | Event::Timeout { task_id } = event {
        tracing::Span::current().record("task_id", field::display(task_id));
    }
}

/// Records the stage a handled event met on the current span.
pub fn note_stage(stage: Option<&StageId>) {
    if let Some(stage) = stage {
        tracing::Span::current().record("stage_id", field::display(stage));
    }
}

/// The worker of the task `event` is about, in `job` before the event.
pub fn event_worker(job: &Job, event: &Event) -> String {
    match event {
        Event::Result(TaskResult { task_id, .. })
        | Event::Skip(TaskResult { task_id, .. })
        | Event::Timeout { task_id } => worker_of(job, task_id),
        Event::Start | Event::Abort | Event::Pause | Event::Resume | Event::Fail { .. } => {
            String::new()
        }
    }
}

/// The worker of the stage that issued `task_id` in `job`.
fn worker_of(job: &Job, task_id: &TaskId) -> String {
    job.stage_issuing(task_id)
        .and_then(|s| s.worker_id.clone())
        .unwrap_or_default()
}

/// Records the metrics of one applied event; `after` is the job as written.
pub fn observe(step: &Step, event: &Event, after: &Job) {
    let worker = step.worker.as_str();
    if step.started {
        meter::job_started();
    }
    match event {
        Event::Start | Event::Pause | Event::Resume => {}
        Event::Result(result) => {
            if result.error.is_none() {
                meter::task_completed(worker);
            } else if step.retried {
                meter::task_retried(worker);
            }
        }
        Event::Timeout { .. } => {
            meter::task_timed_out(worker);
            if step.retried {
                meter::task_retried(worker);
            }
        }
        Event::Skip(_) => meter::task_skipped(worker),
        Event::Abort | Event::Fail { .. } => {}
    }
    for effect in &step.effects {
        match effect {
            Effect::Notify(Notice::Job(status)) if !status.is_active() => {
                meter::job_ended(status.as_str())
            }
            Effect::Notify(Notice::StageCompleted(stage_id)) => stage_completed(stage_id, after),
            _ => {}
        }
    }
}

fn stage_completed(stage_id: &StageId, after: &Job) {
    if let Some(stage) = after.stages.iter().find(|s| &s.id == stage_id)
        && let (Some(started), Some(completed)) = (stage.started, stage.completed)
    {
        let duration = (completed.as_datetime() - started.as_datetime())
            .to_std()
            .unwrap_or_default();
        meter::stage_duration(stage.worker_id.as_deref().unwrap_or(""), duration);
    }
}
