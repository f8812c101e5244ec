//! Pause, resume and hold, through the engine's one entry point.

use serde_json::json;

use crate::domain::engine::{Decision, Effect, Event, Ignored, Notice, TaskResult, apply};
use crate::domain::pipeline::OnFailure;
use crate::domain::{Job, JobStatus, StageId, TaskId, TaskStatus};
use crate::fakes::{applied, at};

/// A started job of the seed's pipeline (stage 01 in flight, one task), holding on failure
/// when `hold`, with two attempts per task.
fn started(hold: bool) -> Job {
    let mut job = crate::fakes::seed_job("run-1");
    for spec in &mut job.pipeline {
        spec.max_attempts = Some(2);
        spec.on_failure = hold.then_some(OnFailure::Hold);
    }
    applied(&job, Event::Start, 0).0
}

fn ignored(job: &Job, event: Event) -> Ignored {
    match apply(job, &event, at(1)) {
        Decision::Ignore(why) => why,
        Decision::Apply { job, .. } => panic!("expected no change, got {:?}", job.status),
    }
}

fn result(task_id: &TaskId, error: Option<&str>) -> TaskResult {
    TaskResult {
        task_id: task_id.clone(),
        run_id: None,
        outputs: vec![json!({"csv_file": "c.csv"})],
        log: None,
        error: error.map(str::to_owned),
    }
}

fn task(job: &Job) -> &crate::domain::TaskRecord {
    &job.current_stage.as_ref().expect("a stage in flight").tasks[0]
}

fn dispatched(effects: &[Effect]) -> Vec<TaskId> {
    effects
        .iter()
        .flat_map(|e| match e {
            Effect::Dispatch { task_ids, .. } => task_ids.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn notices(effects: &[Effect]) -> Vec<Notice> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(notice) => Some(notice.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_paused_job_records_results_but_ends_no_stage_until_resumed() {
    let job = started(false);
    let first = task(&job).task_id.clone();
    let (paused, effects) = applied(&job, Event::Pause, 1);
    assert_eq!(paused.status, JobStatus::Paused);
    assert_eq!(notices(&effects), [Notice::Job(JobStatus::Paused)]);
    assert_eq!(
        ignored(&paused, Event::Pause),
        Ignored::AlreadyInStatus(JobStatus::Paused)
    );

    let (recorded, effects) = applied(&paused, Event::Result(result(&first, None)), 2);
    assert_eq!(task(&recorded).status, TaskStatus::Done);
    assert_eq!(
        recorded.current_stage.as_ref().map(|s| s.id.as_str()),
        Some("01")
    );
    assert!(
        effects.is_empty(),
        "nothing set off while paused: {effects:?}"
    );

    let (resumed, effects) = applied(&recorded, Event::Resume, 3);
    assert_eq!(resumed.status, JobStatus::Running);
    assert_eq!(
        resumed.current_stage.as_ref().map(|s| s.id.as_str()),
        Some("02")
    );
    assert_eq!(
        notices(&effects),
        [
            Notice::Job(JobStatus::Running),
            Notice::StageCompleted(StageId::for_index(0))
        ]
    );
    assert_eq!(dispatched(&effects), [task(&resumed).task_id.clone()]);
    assert_eq!(
        ignored(&resumed, Event::Resume),
        Ignored::AlreadyInStatus(JobStatus::Running)
    );
}

#[test]
fn a_retry_while_paused_is_queued_and_dispatched_with_a_fresh_deadline_on_resume() {
    let job = started(false);
    let first = task(&job).task_id.clone();
    let (paused, _) = applied(&job, Event::Pause, 1);
    let (retried, effects) = applied(&paused, Event::Result(result(&first, Some("boom"))), 2);
    let queued = task(&retried);
    assert_eq!((queued.status, queued.attempt), (TaskStatus::Queued, 2));
    assert!(dispatched(&effects).is_empty());
    // A queued task is not in flight: its deadline means nothing until it is dispatched.
    let timeout = Event::Timeout {
        task_id: queued.task_id.clone(),
    };
    assert_eq!(ignored(&retried, timeout), Ignored::Duplicate);

    let (resumed, effects) = applied(&retried, Event::Resume, 100);
    let pending = task(&resumed);
    assert_eq!(pending.status, TaskStatus::Pending);
    assert_eq!((pending.issued, pending.dispatched), (at(100), None));
    assert!(pending.deadline > at(100));
    assert_eq!(dispatched(&effects), std::slice::from_ref(&pending.task_id));
}

#[test]
fn a_job_paused_before_it_started_starts_on_resume() {
    let job = crate::fakes::seed_job("r");
    let (paused, _) = applied(&job, Event::Pause, 1);
    assert_eq!(ignored(&paused, Event::Start), Ignored::AlreadyStarted);
    let (resumed, effects) = applied(&paused, Event::Resume, 2);
    assert_eq!(resumed.status, JobStatus::Running);
    assert_eq!(resumed.started, Some(at(2)));
    assert_eq!(dispatched(&effects).len(), 1);
}

#[test]
fn a_task_out_of_attempts_holds_the_job_when_its_stage_says_so() {
    let job = started(true);
    let first = task(&job).task_id.clone();
    let (retried, _) = applied(&job, Event::Result(result(&first, Some("down"))), 1);
    let second = task(&retried).task_id.clone();
    let (held, effects) = applied(&retried, Event::Result(result(&second, Some("down"))), 2);
    assert_eq!(held.status, JobStatus::Held);
    assert_eq!(task(&held).status, TaskStatus::Failed);
    assert!(
        held.error
            .as_deref()
            .is_some_and(|e| e.contains("holds the job")),
        "{:?}",
        held.error
    );
    assert_eq!(notices(&effects), [Notice::Job(JobStatus::Held)]);
    assert!(!effects.contains(&Effect::Archive));

    // Without the hold, the same failure ends the job.
    let job = started(false);
    let first = task(&job).task_id.clone();
    let (retried, _) = applied(&job, Event::Result(result(&first, Some("down"))), 1);
    let second = task(&retried).task_id.clone();
    let (failed, _) = applied(&retried, Event::Result(result(&second, Some("down"))), 2);
    assert_eq!(failed.status, JobStatus::Failed);
}

/// A job held on its first stage's only task, out of its two attempts.
fn held() -> Job {
    let job = started(true);
    let first = task(&job).task_id.clone();
    let (retried, _) = applied(&job, Event::Result(result(&first, Some("down"))), 1);
    let second = task(&retried).task_id.clone();
    applied(&retried, Event::Result(result(&second, Some("down"))), 2).0
}

#[test]
fn skipping_the_held_task_records_its_outputs_and_runs_the_job_on() {
    let job = held();
    let id = task(&job).task_id.clone();
    let (skipped, effects) = applied(&job, Event::Skip(result(&id, None)), 3);
    assert_eq!(skipped.status, JobStatus::Running);
    assert_eq!(skipped.error, None);
    let ended = &skipped.stages[1];
    assert_eq!(ended.tasks[0].status, TaskStatus::Skipped);
    assert_eq!(ended.outputs, [json!({"csv_file": "c.csv"})]);
    assert_eq!(ended.error, None);
    assert_eq!(
        skipped.current_stage.as_ref().map(|s| s.id.as_str()),
        Some("02")
    );
    assert_eq!(dispatched(&effects).len(), 1);
    // Skipping again, or skipping a task that has not failed, changes nothing.
    assert_eq!(
        ignored(&skipped, Event::Skip(result(&id, None))),
        Ignored::Duplicate
    );
    let pending = task(&skipped).task_id.clone();
    assert_eq!(
        ignored(&skipped, Event::Skip(result(&pending, None))),
        Ignored::NotFailed
    );
}

#[test]
fn resuming_a_held_job_gives_the_held_task_one_fresh_attempt() {
    let job = held();
    let old = task(&job).task_id.clone();
    let (resumed, effects) = applied(&job, Event::Resume, 3);
    let retry = task(&resumed);
    assert_eq!(resumed.status, JobStatus::Running);
    assert_eq!((retry.status, retry.attempt), (TaskStatus::Pending, 3));
    assert!(retry.previous_ids.contains(&old));
    assert_eq!(dispatched(&effects), std::slice::from_ref(&retry.task_id));
    // It fails again: held again, not retried past its attempts.
    let again = retry.task_id.clone();
    let (held_again, effects) = applied(&resumed, Event::Result(result(&again, Some("x"))), 4);
    assert_eq!(held_again.status, JobStatus::Held);
    assert!(dispatched(&effects).is_empty());
}

#[test]
fn a_held_job_can_be_paused_aborted_and_its_skip_keeps_it_paused() {
    let job = held();
    let id = task(&job).task_id.clone();
    let (paused, _) = applied(&job, Event::Pause, 3);
    let (skipped, effects) = applied(&paused, Event::Skip(result(&id, None)), 4);
    assert_eq!(skipped.status, JobStatus::Paused);
    assert!(effects.is_empty());
    let (aborted, effects) = applied(&skipped, Event::Abort, 5);
    assert_eq!(aborted.status, JobStatus::Aborted);
    assert!(effects.contains(&Effect::Archive));
    assert_eq!(
        ignored(&aborted, Event::Resume),
        Ignored::JobNotActive(JobStatus::Aborted)
    );
}

#[test]
fn a_late_success_of_the_held_task_is_its_result_and_releases_the_hold() {
    let job = held();
    let id = task(&job).task_id.clone();
    // A late error says nothing new.
    assert_eq!(
        ignored(&job, Event::Result(result(&id, Some("again")))),
        Ignored::Duplicate
    );
    let (done, effects) = applied(&job, Event::Result(result(&id, None)), 3);
    assert_eq!(done.status, JobStatus::Running);
    assert_eq!(done.stages[1].tasks[0].status, TaskStatus::Done);
    assert_eq!(
        done.current_stage.as_ref().map(|s| s.id.as_str()),
        Some("02")
    );
    assert_eq!(dispatched(&effects).len(), 1);
    assert_eq!(
        ignored(&done, Event::Result(result(&id, None))),
        Ignored::Duplicate
    );
}
