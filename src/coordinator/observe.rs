//! Observation: the metrics of each applied event, and the span fields of a handled event,
//! kept out of the write loop (README.md, "Metrics", lists them).

use tracing::field;

use crate::domain::{Effect, Event, Job, Notice, StageId, TaskId, TaskResult};
use crate::meter;

/// One applied event of a batch, with what its metrics need from before it was applied.
#[derive(Debug)]
pub struct Step {
    /// The event's place in its batch.
    pub index: usize,
    /// The worker of the task the event is about (empty for job-level events).
    pub worker: String,
    /// The event put a failed or overdue task up for another attempt.
    pub retried: bool,
    pub effects: Vec<Effect>,
}

impl Step {
    /// Describes `event`, about to be applied to `job`, once applying it gave `effects`;
    /// `stage_before` is the stage in flight before it.
    pub fn new(
        index: usize,
        worker: String,
        event: &Event,
        stage_before: Option<&StageId>,
        job: &Job,
        effects: Vec<Effect>,
    ) -> Self {
        let stage_after = job.current_stage.as_ref().map(|s| &s.id);
        let retried = !matches!(event, Event::Start)
            && stage_after == stage_before
            && effects.iter().any(|e| matches!(e, Effect::Dispatch { .. }));
        Self {
            index,
            worker,
            retried,
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
    match event {
        Event::Start => meter::job_started(),
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
        Event::Abort | Event::Pause | Event::Resume | Event::Fail { .. } => {}
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
