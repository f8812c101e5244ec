//! The outbox mark: set on the named attempts of the run's stage in flight, changing no
//! version, and kept by a later compare-and-set that leaves its attempt alone
//! (docs/consistency.md, "The outbox").

use super::{Catalog, applied, assert_job, failure, hash, insert, stored, task_id, write};
use crate::domain::{Job, StageId, TaskId, Timestamp};
use crate::fakes::{done, sample_job};
use crate::ports::DispatchMark;
use crate::ports::JobStore;

/// The stage in flight's id.
fn stage_of(job: &Job) -> StageId {
    job.current_stage
        .as_ref()
        .expect("a stage in flight")
        .id
        .clone()
}

/// `job` with tasks `indexes` of its stage in flight marked at `at`.
fn marked(job: &Job, indexes: &[usize], at: Timestamp) -> Job {
    let mut job = job.clone();
    let stage = job.current_stage.as_mut().expect("a stage in flight");
    for &index in indexes {
        stage.tasks[index].dispatched = Some(at);
    }
    job
}

async fn mark(store: &dyn JobStore, job: &Job, stage: &StageId, ids: &[TaskId], at: Timestamp) {
    let marks = [DispatchMark::new(job, stage, ids, at)];
    store
        .mark_dispatched(&marks)
        .await
        .expect("mark_dispatched");
}

pub(super) async fn mark_dispatched_marks_only_the_named_attempts_and_keeps_the_version(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = sample_job(&hash("mark", 0), 3);
    insert(store, &job).await;
    let at = Timestamp::now();
    let ids = [task_id(&job, 0), task_id(&job, 2)];
    mark(store, &job, &stage_of(&job), &ids, at).await;
    let expected = marked(&job, &[0, 2], at);
    assert_job(
        &stored(store, &job.id).await,
        &expected,
        "tasks 0 and 2 marked",
    );
}

pub(super) async fn marks_of_many_jobs_go_in_one_call_and_a_stale_one_stops_none(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let jobs: Vec<Job> = (0..3)
        .map(|n| sample_job(&hash("mark-many", n), 2))
        .collect();
    for job in &jobs {
        insert(store, job).await;
    }
    let at = Timestamp::now();
    let mut marks: Vec<DispatchMark> = jobs
        .iter()
        .map(|job| DispatchMark::new(job, &stage_of(job), &[task_id(job, 1)], at))
        .collect();
    // In the middle, a mark whose stage is no longer in flight: it matches nothing.
    let ended = jobs[1].stages.last().expect("an ended stage").id.clone();
    marks.insert(
        1,
        DispatchMark::new(&jobs[1], &ended, &[task_id(&jobs[1], 0)], at),
    );
    store
        .mark_dispatched(&marks)
        .await
        .expect("mark_dispatched");
    for job in &jobs {
        let expected = marked(job, &[1], at);
        assert_job(
            &stored(store, &job.id).await,
            &expected,
            "task 1 of each job marked",
        );
    }
}

pub(super) async fn mark_dispatched_of_another_run_or_stage_changes_nothing(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = sample_job(&hash("mark-elsewhere", 0), 2);
    insert(store, &job).await;
    let at = Timestamp::now();
    let stage = stage_of(&job);
    let ids = [task_id(&job, 0), task_id(&job, 1)];
    let mut other_run = job.clone();
    other_run.run_id = "another-run".into();
    mark(store, &other_run, &stage, &ids, at).await;
    assert_job(&stored(store, &job.id).await, &job, "a mark of another run");
    let ended_stage = job.stages.last().expect("an ended stage").id.clone();
    mark(store, &job, &ended_stage, &ids, at).await;
    assert_job(
        &stored(store, &job.id).await,
        &job,
        "a mark of another stage",
    );
    let not_issued = TaskId::derive(&job.run_id, &stage, 0, 2);
    mark(store, &job, &stage, &[not_issued], at).await;
    assert_job(
        &stored(store, &job.id).await,
        &job,
        "a mark of an attempt not issued",
    );
    // The same mark with this run, stage and attempt does land.
    mark(store, &job, &stage, &ids[..1], at).await;
    let expected = marked(&job, &[0], at);
    assert_job(
        &stored(store, &job.id).await,
        &expected,
        "a mark of this run",
    );
}

/// The job was read, the dispatch of its tasks confirmed and marked, then a result for another
/// task written from that read: the marks stay (the write sends only what changed).
pub(super) async fn a_mark_survives_a_write_from_an_earlier_read_that_leaves_its_task_alone(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = sample_job(&hash("mark-kept", 0), 3);
    insert(store, &job).await;
    let read = stored(store, &job.id).await;
    let at = Timestamp::now();
    let ids = [task_id(&job, 0), task_id(&job, 1)];
    mark(store, &job, &stage_of(&job), &ids, at).await;
    let result = done(&task_id(&job, 2), vec![serde_json::json!({"done": 2})]);
    let after = applied(&read, &result, Timestamp::now());
    write(store, &read, &after).await;
    let expected = marked(&after, &[0, 1], at);
    assert_job(
        &stored(store, &job.id).await,
        &expected,
        "the write kept the marks",
    );
}

/// A worker answered before its dispatch was marked, and the result was written from a read
/// without the mark: the mark stays on the completed attempt.
pub(super) async fn a_mark_survives_a_write_from_an_earlier_read_that_completes_its_attempt(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = sample_job(&hash("mark-done", 0), 2);
    insert(store, &job).await;
    let read = stored(store, &job.id).await;
    let at = Timestamp::now();
    mark(store, &job, &stage_of(&job), &[task_id(&job, 0)], at).await;
    let result = done(&task_id(&job, 0), vec![serde_json::json!({"done": 0})]);
    let after = applied(&read, &result, Timestamp::now());
    write(store, &read, &after).await;
    let expected = marked(&after, &[0], at);
    assert_job(
        &stored(store, &job.id).await,
        &expected,
        "the write kept the mark",
    );
}

/// A worker failed before its dispatch was marked, and the retry was written from a read
/// without the mark: the new attempt must go through the outbox afresh, so the mark of the
/// old one must not stay on it (the relay would never publish the new attempt).
pub(super) async fn a_mark_does_not_carry_over_to_the_retry_of_its_attempt(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = sample_job(&hash("mark-retry", 0), 2);
    insert(store, &job).await;
    let read = stored(store, &job.id).await;
    let at = Timestamp::now();
    mark(store, &job, &stage_of(&job), &[task_id(&job, 0)], at).await;
    let expected = marked(&job, &[0], at);
    assert_job(&stored(store, &job.id).await, &expected, "the mark landed");
    let after = applied(&read, &failure(&task_id(&job, 0)), Timestamp::now());
    assert_ne!(
        task_id(&after, 0),
        task_id(&job, 0),
        "the failure is retried"
    );
    write(store, &read, &after).await;
    assert_job(
        &stored(store, &job.id).await,
        &after,
        "the retry without a mark",
    );
}
