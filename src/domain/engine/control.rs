//! An operator's control over a running job: pause, resume, and the hold of a stage whose task
//! used up its attempts, released by skipping the task or by a fresh attempt (docs/semantics.md,
//! "Pause, resume and hold").
//!
//! A paused or held job records results and timeouts as any job does, but what they would set
//! off waits: a retry is recorded as `queued` instead of dispatched, and a stage whose tasks all
//! have their outputs ends only when the job runs again.

use super::stages::{advance, complete_stage};
use super::{Effect, Ignored, Notice, TaskResult, stage_spec_timeout, start, task_for};
use crate::domain::pipeline::DEFAULT_TIMEOUT_S;
use crate::domain::{
    Job, JobStatus, StageId, StageRecord, TaskId, TaskRecord, TaskStatus, Timestamp,
};

/// Whether every task of `stage` has its outputs. From the end: the tasks dispatched last are
/// the likeliest to be pending, so a wide stage's check stops at once instead of reading every
/// task for every result.
pub(super) fn stage_done(stage: &StageRecord) -> bool {
    stage.tasks.iter().rev().all(|t| t.status.is_finished())
}

/// Moves `task` on to its next attempt, issued at `now`.
pub(super) fn next_attempt(
    task: &mut TaskRecord,
    run_id: &str,
    stage_id: &StageId,
    index: usize,
    now: Timestamp,
    timeout_s: u64,
) {
    task.previous_ids.push(task.task_id.clone());
    task.attempt += 1;
    task.task_id = TaskId::derive(run_id, stage_id, index, task.attempt);
    task.status = TaskStatus::Pending;
    task.issued = now;
    task.deadline = now.plus_seconds(timeout_s);
    task.dispatched = None;
    task.completed = None;
}

/// Holds the job for an operator, with `message` as the reason shown.
pub(super) fn hold(job: &mut Job, message: String, effects: &mut Vec<Effect>) {
    if let Some(stage) = job.current_stage.as_mut() {
        stage.error = Some(message.clone());
    }
    job.error = Some(message);
    // A paused job stays paused; a resume gives the task a fresh attempt.
    if job.status == JobStatus::Running {
        job.status = JobStatus::Held;
        effects.push(Effect::Notify(Notice::Job(JobStatus::Held)));
    }
}

pub(super) fn pause(job: &mut Job, effects: &mut Vec<Effect>) -> Result<(), Ignored> {
    if job.status == JobStatus::Paused {
        return Err(Ignored::AlreadyInStatus(JobStatus::Paused));
    }
    job.status = JobStatus::Paused;
    effects.push(Effect::Notify(Notice::Job(JobStatus::Paused)));
    Ok(())
}

/// Runs a paused or held job again: a job paused before it started starts; otherwise failed
/// tasks get a fresh attempt, queued ones are dispatched, and a stage whose tasks all have
/// their outputs ends.
pub(super) fn resume(
    job: &mut Job,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Result<(), Ignored> {
    if matches!(job.status, JobStatus::Running | JobStatus::Pending) {
        return Err(Ignored::AlreadyInStatus(job.status));
    }
    if job.started.is_none() {
        job.status = JobStatus::Pending;
        return start(job, now, effects);
    }
    if job.current_stage.iter().any(has_failed) {
        retry_failed(job, now);
    }
    run_again(job, now, effects);
    Ok(())
}

/// Records `result` as the outputs of a task whose last attempt failed; a held job with no
/// other failed task runs again.
pub(super) fn skip(
    job: &mut Job,
    result: &TaskResult,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Result<(), Ignored> {
    let (index, _) = task_for(job, result)?;
    let Some(stage) = job.current_stage.as_mut() else {
        return Err(Ignored::UnknownTask);
    };
    let task = &mut stage.tasks[index];
    match task.status {
        TaskStatus::Failed => {}
        TaskStatus::Done | TaskStatus::Skipped => return Err(Ignored::Duplicate),
        TaskStatus::Pending | TaskStatus::Queued => return Err(Ignored::NotFailed),
    }
    task.status = TaskStatus::Skipped;
    task.outputs = Some(result.outputs.clone());
    task.log = result.log.clone();
    task.completed = Some(now);
    settle(job, now, effects);
    Ok(())
}

/// After a task of the stage in flight got its outputs: a running job ends the stage once
/// every task has them; a held job with no failed task left runs again; a paused job waits.
pub(super) fn settle(job: &mut Job, now: Timestamp, effects: &mut Vec<Effect>) {
    let Some(stage) = job.current_stage.as_ref() else {
        return;
    };
    match job.status {
        JobStatus::Running if stage_done(stage) => complete_stage(job, now, effects),
        JobStatus::Held if !has_failed(stage) => run_again(job, now, effects),
        _ => {}
    }
}

/// The task deadline of the stage in flight, in seconds.
fn timeout_of_current(job: &Job) -> u64 {
    job.current_stage
        .as_ref()
        .map_or(DEFAULT_TIMEOUT_S, |s| stage_spec_timeout(job, &s.id))
}

fn has_failed(stage: &StageRecord) -> bool {
    stage.tasks.iter().any(|t| t.status == TaskStatus::Failed)
}

/// Gives every failed task of the stage in flight a fresh attempt, recorded as queued.
fn retry_failed(job: &mut Job, now: Timestamp) {
    let timeout_s = timeout_of_current(job);
    let Some(stage) = job.current_stage.as_mut() else {
        return;
    };
    let stage_id = stage.id.clone();
    for (index, task) in stage.tasks.iter_mut().enumerate() {
        if task.status == TaskStatus::Failed {
            next_attempt(task, &job.run_id, &stage_id, index, now, timeout_s);
            task.status = TaskStatus::Queued;
        }
    }
    stage.error = None;
}

/// Sets the job running: queued tasks are dispatched with fresh deadlines, and a stage whose
/// tasks all have their outputs ends.
fn run_again(job: &mut Job, now: Timestamp, effects: &mut Vec<Effect>) {
    job.status = JobStatus::Running;
    job.error = None;
    effects.push(Effect::Notify(Notice::Job(JobStatus::Running)));
    let timeout_s = timeout_of_current(job);
    let Some(stage) = job.current_stage.as_mut() else {
        // Paused between stages cannot happen (a stage ends only while running), but a job
        // with no stage in flight goes on with the next one.
        advance(job, now, effects);
        return;
    };
    stage.error = None;
    if stage_done(stage) {
        complete_stage(job, now, effects);
        return;
    }
    let mut task_ids = Vec::new();
    for task in stage.tasks.iter_mut() {
        if task.status == TaskStatus::Queued {
            task.status = TaskStatus::Pending;
            task.issued = now;
            task.deadline = now.plus_seconds(timeout_s);
            task.dispatched = None;
            task_ids.push(task.task_id.clone());
        }
    }
    if !task_ids.is_empty() {
        let stage_id = stage.id.clone();
        effects.push(Effect::Dispatch { stage_id, task_ids });
    }
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
