//! Two reads of a job in, the transitions between them out.

use serde_json::{Value, json};

use super::*;
use crate::domain::engine::Event;
use crate::fakes::at;

fn new_job(run: &str) -> Job {
    crate::fakes::seed_job(run)
}

fn applied(job: &Job, event: Event, seconds: i64) -> Job {
    crate::fakes::applied(job, event, seconds).0
}

/// The first task of the stage in flight answered with `outputs`.
fn answer(job: &Job, outputs: Value, seconds: i64) -> Job {
    crate::fakes::answer_first(job, vec![outputs], seconds)
}

/// `(event, stage, task status)` of each change.
fn story(changes: &[JobChange]) -> Vec<(String, Option<String>, Option<TaskStatus>)> {
    changes
        .iter()
        .map(|c| {
            let stage = c.stage_id.as_ref().map(|s| s.as_str().to_owned());
            (c.event.as_str().to_owned(), stage, c.task_status)
        })
        .collect()
}

fn step(
    event: &str,
    stage: &str,
    task: Option<TaskStatus>,
) -> (String, Option<String>, Option<TaskStatus>) {
    (event.to_owned(), Some(stage.to_owned()), task)
}

#[test]
fn the_same_read_twice_is_no_change() {
    let job = applied(&new_job("r"), Event::Start, 1);
    assert!(between(&job, &job, at(2)).is_empty());
    let first = current(&job, at(2));
    assert_eq!(
        (first.event, first.status),
        (ChangeKind::Status, JobStatus::Running)
    );
    assert_eq!(first.stage_id.as_ref().map(StageId::as_str), Some("01"));
}

#[test]
fn a_result_that_ends_a_stage_tells_the_result_the_end_and_the_next_start() {
    let before = applied(&new_job("r"), Event::Start, 1);
    let after = answer(&before, json!({"csv_file": "c"}), 2);
    let changes = between(&before, &after, at(3));
    assert_eq!(
        story(&changes),
        [
            step("result.recorded", "01", Some(TaskStatus::Done)),
            step("stage.completed", "01", None),
            step("stage.started", "02", None),
        ]
    );
    assert_eq!(
        changes[0].task_id,
        Some(
            before.current_stage.as_ref().expect("01").tasks[0]
                .task_id
                .clone()
        )
    );
    assert_eq!(changes[0].at, at(2), "when the result was recorded");
    assert_eq!(changes[2].tasks, Some(1));
}

#[test]
fn reads_far_apart_still_tell_every_stage_in_order_and_the_final_status() {
    let first = applied(&new_job("r"), Event::Start, 1);
    let mut job = first.clone();
    job = answer(&job, json!({"csv_file": "c"}), 2);
    job = answer(&job, json!({"output_csv": "o"}), 3);
    job = applied(&job, Event::Abort, 4);
    let changes = between(&first, &job, at(5));
    let events: Vec<String> = story(&changes)
        .into_iter()
        .map(|(e, s, _)| format!("{e} {}", s.unwrap_or_default()))
        .collect();
    assert_eq!(
        events,
        [
            "result.recorded 01",
            "stage.completed 01",
            "stage.started 02",
            "result.recorded 02",
            "stage.completed 02",
            "stage.started 03",
            "stage.completed 03",
            "status ",
        ]
    );
    let last = changes.last().expect("the status");
    assert_eq!((last.status, last.at), (JobStatus::Aborted, at(4)));
    assert_eq!(last.error.as_deref(), Some("aborted by request"));
}

#[test]
fn a_pause_and_a_retry_are_told() {
    let running = applied(&new_job("r"), Event::Start, 1);
    let paused = applied(&running, Event::Pause, 2);
    assert_eq!(
        story(&between(&running, &paused, at(3))),
        [("status".to_owned(), None, None)]
    );
    let task_id = paused.current_stage.as_ref().expect("01").tasks[0]
        .task_id
        .clone();
    let failed = Event::Result(crate::domain::TaskResult {
        task_id,
        run_id: None,
        outputs: vec![Value::Null],
        log: None,
        error: Some("boom".into()),
    });
    let retried = applied(&paused, failed, 3);
    assert_eq!(
        story(&between(&paused, &retried, at(4))),
        [step("result.recorded", "01", Some(TaskStatus::Queued))]
    );
}

#[test]
fn a_rerun_starts_the_story_over() {
    let old = applied(&new_job("r1"), Event::Start, 1);
    let rerun = applied(&new_job("r2"), Event::Start, 2);
    let changes = between(&old, &rerun, at(3));
    assert_eq!(
        story(&changes),
        [
            ("status".to_owned(), None, None),
            step("stage.started", "01", None)
        ]
    );
    assert!(changes.iter().all(|c| c.run_id == "r2"));
}

#[test]
fn a_resume_is_told_first_and_is_no_result() {
    let running = applied(&new_job("r"), Event::Start, 1);
    let paused = applied(&running, Event::Pause, 2);
    let task_id = paused.current_stage.as_ref().expect("01").tasks[0]
        .task_id
        .clone();
    let recorded = answer(&paused, json!({"csv_file": "c"}), 3);
    let failed = Event::Result(crate::domain::TaskResult {
        task_id,
        run_id: None,
        outputs: vec![Value::Null],
        log: None,
        error: Some("boom".into()),
    });
    let queued = applied(&paused, failed, 3);
    // The queued retry goes out on resume: the status, and no result.
    let resumed = applied(&queued, Event::Resume, 4);
    assert_eq!(
        story(&between(&queued, &resumed, at(5))),
        [("status".to_owned(), None, None)]
    );
    // A stage that ended while paused ends on resume: the status first, then the stages.
    let resumed = applied(&recorded, Event::Resume, 4);
    assert_eq!(
        story(&between(&recorded, &resumed, at(5))),
        [
            ("status".to_owned(), None, None),
            step("stage.completed", "01", None),
            step("stage.started", "02", None),
        ]
    );
}
