//! The job state machine: `(job, event, now) → decision`, with no I/O.
//!
//! The shell loads a job, asks [`apply`] what an event does to it, writes the new job with a
//! compare-and-set on `{_id, run_id, version}`, and only then carries out the effects.
//!
//! The transitions of tasks are here; planning and ending stages is in `engine/stages.rs`
//! (docs/semantics.md, "Fan-out and fan-in"). Every check comes before its first change; the
//! tests are in `engine_tests.rs`.

mod control;
mod ignored;
mod stages;

pub use self::ignored::Ignored;

use std::sync::Arc;

use serde_json::Value;

use self::stages::advance;

use super::ids::{StageId, TaskId};
use super::job::{Job, JobStatus, TaskRecord, TaskStatus};
use super::time::Timestamp;

/// Something that happened to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Dispatch the first stage of a pending job.
    Start,
    /// A worker reported on a task.
    Result(TaskResult),
    /// A client asked to abort.
    Abort,
    /// A client asked to pause: nothing new is dispatched until [`Event::Resume`].
    Pause,
    /// A client asked a paused or held job to run again: queued tasks are dispatched and
    /// failed tasks of a held stage get a fresh attempt.
    Resume,
    /// An operator posted the outputs of a task whose last attempt failed in a stage that
    /// holds: the task is recorded as skipped with them.
    Skip(TaskResult),
    /// The task's deadline passed without a result.
    Timeout { task_id: TaskId },
    /// The shell cannot go on with the job (its document would outgrow what the database
    /// stores): fail it with `reason`.
    Fail { reason: String },
}

/// A worker's report on one task attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub task_id: TaskId,
    /// The run the result says it belongs to, when the worker echoed it: a result of another
    /// run of the same job is ignored with that reason.
    pub run_id: Option<String>,
    /// Already normalised: every entry is an object or `null`.
    pub outputs: Vec<Value>,
    pub log: Option<String>,
    pub error: Option<String>,
}

/// What the shell must do after the new job is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish the current attempt of these tasks of the stage in flight.
    Dispatch {
        stage_id: StageId,
        task_ids: Vec<TaskId>,
    },
    /// Publish a notice on the events exchange.
    Notify(Notice),
    /// Move the ended job to history.
    Archive,
}

/// A notice for the events exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// `job.<status>`.
    Job(JobStatus),
    /// `stage.completed`.
    StageCompleted(StageId),
}

/// What an event does to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Write `job` (its version already bumped), then carry out `effects` in order.
    Apply { job: Box<Job>, effects: Vec<Effect> },
    /// Nothing changes.
    Ignore(Ignored),
}

/// The most tasks one stage may have. Every task ends up in the job's history record, which
/// MongoDB caps at 16 MiB (while the job runs, a store may keep a wide stage's tasks apart);
/// 20,000 small tasks take about 7 MiB. (The shell also fails a job whose document
/// would outgrow the cap, whatever the width.)
pub const MAX_STAGE_TASKS: usize = 20_000;

/// The most a stage's tasks may take together (inputs and configs, as JSON). They end up in the
/// job's history record, which MongoDB caps at 16 MiB; checked from sizes before anything is copied, so
/// a stage that fans a large output out to many tasks fails with the reason instead of
/// building gigabytes first.
pub const MAX_STAGE_BYTES: usize = 12 * 1024 * 1024;

/// Applies `event` to `job` at `now`.
pub fn apply(job: &Job, event: &Event, now: Timestamp) -> Decision {
    let mut next = job.clone();
    match apply_in_place(&mut next, event, now) {
        Ok(effects) => {
            next.version += 1;
            Decision::Apply {
                job: Box::new(next),
                effects,
            }
        }
        Err(ignored) => {
            debug_assert!(&next == job, "an ignored event changed the job");
            Decision::Ignore(ignored)
        }
    }
}

/// Applies `event` to `job` at `now` without copying it: the effects to carry out once the
/// changed job is durable, or why nothing changed (and then `job` is untouched). The version is
/// left alone; the shell bumps it once per write, however many events the write holds.
///
/// Every check comes before the first change, so an ignored event never leaves a half-applied
/// job behind ([`apply`] asserts this in debug builds, so every engine test checks it).
pub fn apply_in_place(
    job: &mut Job,
    event: &Event,
    now: Timestamp,
) -> Result<Vec<Effect>, Ignored> {
    if !job.status.is_active() {
        return Err(Ignored::JobNotActive(job.status));
    }
    let mut effects = Vec::new();
    match event {
        Event::Start => start(job, now, &mut effects)?,
        Event::Result(result) => on_result(job, result, now, &mut effects)?,
        Event::Abort => end(
            job,
            JobStatus::Aborted,
            Some("aborted by request".into()),
            now,
            &mut effects,
        ),
        Event::Pause => control::pause(job, &mut effects)?,
        Event::Resume => control::resume(job, now, &mut effects)?,
        Event::Skip(result) => control::skip(job, result, now, &mut effects)?,
        Event::Timeout { task_id } => on_timeout(job, task_id, now, &mut effects)?,
        Event::Fail { reason } => end(
            job,
            JobStatus::Failed,
            Some(reason.clone()),
            now,
            &mut effects,
        ),
    }
    Ok(effects)
}

fn start(job: &mut Job, now: Timestamp, effects: &mut Vec<Effect>) -> Result<(), Ignored> {
    if job.status != JobStatus::Pending {
        return Err(Ignored::AlreadyStarted);
    }
    job.status = JobStatus::Running;
    job.started = Some(now);
    effects.push(Effect::Notify(Notice::Job(JobStatus::Running)));
    advance(job, now, effects);
    Ok(())
}

/// Where a task id was found.
enum Found {
    Current { index: usize, is_latest: bool },
    Ended,
    Nowhere,
}

fn find_task(job: &Job, task_id: &TaskId) -> Found {
    let issued = |t: &TaskRecord| t.issued_as(task_id);
    if let Some(stage) = &job.current_stage
        && let Some(index) = stage.tasks.iter().position(issued)
    {
        return Found::Current {
            index,
            is_latest: &stage.tasks[index].task_id == task_id,
        };
    }
    if job.stages.iter().any(|s| s.tasks.iter().any(issued)) {
        Found::Ended
    } else {
        Found::Nowhere
    }
}

/// The task of the stage in flight that `result` names: its index, and whether the result names
/// its current attempt. Or why the job does not take the result: it has not started, the result
/// is another run's, or no task in flight was issued with the id.
fn task_for(job: &Job, result: &TaskResult) -> Result<(usize, bool), Ignored> {
    if job.status == JobStatus::Pending {
        return Err(Ignored::JobNotActive(job.status));
    }
    if result.run_id.as_ref().is_some_and(|run| run != &job.run_id) {
        return Err(Ignored::OtherRun);
    }
    match find_task(job, &result.task_id) {
        Found::Current { index, is_latest } => Ok((index, is_latest)),
        Found::Ended => Err(Ignored::Duplicate),
        Found::Nowhere => Err(Ignored::UnknownTask),
    }
}

fn on_result(
    job: &mut Job,
    result: &TaskResult,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Result<(), Ignored> {
    let (index, is_latest) = task_for(job, result)?;
    let Some(stage) = job.current_stage.as_mut() else {
        return Err(Ignored::UnknownTask);
    };
    let task = &mut stage.tasks[index];
    // A task that failed in a stage that holds still takes a late success: its outputs are
    // what the operator would have posted.
    let open = match task.status {
        TaskStatus::Pending | TaskStatus::Queued => true,
        TaskStatus::Failed => result.error.is_none(),
        TaskStatus::Done | TaskStatus::Skipped => false,
    };
    if !open {
        return Err(Ignored::Duplicate);
    }
    match &result.error {
        Some(error) => {
            // A late error from a superseded attempt says nothing about the current one.
            if !is_latest {
                return Err(Ignored::StaleAttempt);
            }
            failed_attempt(job, index, format!("worker error: {error}"), now, effects);
        }
        None => {
            // A late success from an earlier attempt is still a valid result for the task.
            task.status = TaskStatus::Done;
            task.outputs = Some(result.outputs.clone());
            task.log = result.log.clone();
            task.error = None;
            task.completed = Some(now);
            control::settle(job, now, effects);
        }
    }
    Ok(())
}

fn on_timeout(
    job: &mut Job,
    task_id: &TaskId,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Result<(), Ignored> {
    let index = match find_task(job, task_id) {
        Found::Current {
            index,
            is_latest: true,
        } => index,
        Found::Current { .. } => return Err(Ignored::StaleAttempt),
        Found::Ended => return Err(Ignored::Duplicate),
        Found::Nowhere => return Err(Ignored::UnknownTask),
    };
    let Some(stage) = job.current_stage.as_ref() else {
        return Err(Ignored::UnknownTask);
    };
    let task = &stage.tasks[index];
    if task.status != TaskStatus::Pending {
        return Err(Ignored::Duplicate);
    }
    if task.deadline > now {
        return Err(Ignored::StaleAttempt);
    }
    let timeout_s = stage_spec_timeout(job, &stage.id);
    failed_attempt(
        job,
        index,
        format!("timed out: no result within {timeout_s} s"),
        now,
        effects,
    );
    Ok(())
}

fn stage_spec_timeout(job: &Job, stage_id: &StageId) -> u64 {
    stage_id
        .index()
        .and_then(|i| job.pipeline.get(i))
        .map_or(super::pipeline::DEFAULT_TIMEOUT_S, |s| s.timeout_s())
}

/// Retries the task at `index` of the stage in flight (dispatched, or queued while the job is
/// paused or held), or after its last attempt fails the job, or holds it in a stage that holds.
fn failed_attempt(
    job: &mut Job,
    index: usize,
    reason: String,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let Some(stage) = job.current_stage.as_mut() else {
        return;
    };
    let spec = stage.id.index().and_then(|i| job.pipeline.get(i));
    let max_attempts = spec.map_or(super::pipeline::DEFAULT_MAX_ATTEMPTS, |s| s.max_attempts());
    let timeout_s = spec.map_or(super::pipeline::DEFAULT_TIMEOUT_S, |s| s.timeout_s());
    let holds = spec.is_some_and(|s| s.holds_on_failure());
    let stage_id = stage.id.clone();
    let task = &mut stage.tasks[index];
    if task.attempt < max_attempts {
        control::next_attempt(task, &job.run_id, &stage_id, index, now, timeout_s);
        task.error = Some(reason);
        // A paused or held job dispatches nothing new: the retry waits for the resume.
        if job.status == JobStatus::Running {
            effects.push(Effect::Dispatch {
                stage_id,
                task_ids: vec![task.task_id.clone()],
            });
        } else {
            task.status = TaskStatus::Queued;
        }
    } else {
        let attempts = task.attempt;
        task.status = TaskStatus::Failed;
        task.error = Some(reason.clone());
        task.completed = Some(now);
        let holding = if holds { " and holds the job" } else { "" };
        let message = format!(
            "task {} of stage '{stage_id}' failed after {attempts} attempt(s){holding}: {reason}",
            index + 1
        );
        if holds {
            control::hold(job, message, effects);
        } else {
            stage.error = Some(message.clone());
            end(job, JobStatus::Failed, Some(message), now, effects);
        }
    }
}

/// Ends the job with `status`; a stage still in flight is closed with the reason.
fn end(
    job: &mut Job,
    status: JobStatus,
    error: Option<String>,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    if let Some(mut stage) = job.current_stage.take() {
        stage.completed = Some(now);
        if stage.error.is_none() {
            stage.error = error.clone();
        }
        job.stages.push(Arc::new(stage));
    }
    job.status = status;
    job.completed = Some(now);
    job.error = error;
    // Archive first, so a client that reacts to `job.<status>` finds the job in history.
    effects.push(Effect::Archive);
    effects.push(Effect::Notify(Notice::Job(status)));
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
