//! Wide stages: a job whose stage in flight has more tasks than a store may keep in one
//! document reads back exactly as written, through wins, lost races, outbox marks and the
//! archive (docs/consistency.md, "Wide stages").

use super::{Catalog, applied, assert_job, failure, hash, insert, stored, task_id, write};
use crate::domain::{Job, Timestamp};
use crate::fakes::{done, sample_job};
use crate::ports::{DispatchMark, JobStore};

/// Wider than a chunk of the MongoDB store (256 tasks), and not a multiple of it.
const WIDTH: usize = 600;

fn wide(check: &str) -> Job {
    sample_job(&hash(check, 0), WIDTH)
}

/// `job` after task `index` of its stage in flight got a result.
fn answered(job: &Job, index: usize) -> Job {
    let event = done(&task_id(job, index), vec![serde_json::json!({"n": index})]);
    applied(job, &event, Timestamp::now())
}

pub(super) async fn a_wide_stage_reads_back_exactly_through_a_run_of_writes(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = wide("wide-writes");
    insert(store, &job).await;
    assert_job(&stored(store, &job.id).await, &job, "as inserted");
    let mut before = job;
    // One task in the first, the middle and the last chunk, then a retry in the middle.
    for index in [3, 300, WIDTH - 1] {
        let after = answered(&before, index);
        write(store, &before, &after).await;
        assert_job(&stored(store, &after.id).await, &after, "after a result");
        before = after;
    }
    let after = applied(&before, &failure(&task_id(&before, 301)), Timestamp::now());
    write(store, &before, &after).await;
    assert_job(&stored(store, &after.id).await, &after, "after a retry");
}

pub(super) async fn a_lost_race_on_a_wide_job_leaves_the_winner_whole(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = wide("wide-race");
    insert(store, &job).await;
    let winner = answered(&job, 10);
    let loser = answered(&job, 500);
    write(store, &job, &winner).await;
    let won = store
        .compare_and_set(&job, &loser)
        .await
        .expect("compare_and_set");
    assert!(!won, "a write from a stale version lost");
    assert_job(&stored(store, &job.id).await, &winner, "the winner, whole");
    // The loser reads again and writes on top.
    let both = answered(&winner, 500);
    write(store, &winner, &both).await;
    assert_job(&stored(store, &job.id).await, &both, "both results");
}

pub(super) async fn marks_on_a_wide_stage_land_and_survive_a_later_write(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = wide("wide-marks");
    insert(store, &job).await;
    let at = Timestamp::now();
    let stage = job
        .current_stage
        .as_ref()
        .expect("a stage in flight")
        .id
        .clone();
    let ids = [task_id(&job, 0), task_id(&job, 450)];
    let marks = [DispatchMark::new(&job, &stage, &ids, at)];
    store
        .mark_dispatched(&marks)
        .await
        .expect("mark_dispatched");
    let mut expected = job.clone();
    let tasks = &mut expected.current_stage.as_mut().expect("stage").tasks;
    tasks[0].dispatched = Some(at);
    tasks[450].dispatched = Some(at);
    let read = stored(store, &job.id).await;
    assert_job(&read, &expected, "tasks 0 and 450 marked, version kept");
    // A result for a task in another chunk, written from the marked read, keeps both marks.
    let after = answered(&read, 100);
    write(store, &read, &after).await;
    assert_job(&stored(store, &job.id).await, &after, "marks kept");
}

pub(super) async fn archive_of_a_wide_job_keeps_every_task(store: &dyn JobStore, _: &dyn Catalog) {
    let mut job = wide("wide-archive");
    insert(store, &job).await;
    let aborted = applied(&job, &crate::domain::Event::Abort, Timestamp::now());
    write(store, &job, &aborted).await;
    job = aborted;
    store.archive(&job).await.expect("archive");
    assert!(store.load_job(&job.id).await.expect("load").is_none());
    let record = store
        .load_history(&job.id)
        .await
        .expect("load_history")
        .expect("a history record");
    assert_job(&record.job, &job, "the archived run");
}

pub(super) async fn a_group_of_wide_writes_tells_each_its_outcome_and_keeps_each_whole(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let (a, b) = (wide("wide-group-a"), wide("wide-group-b"));
    insert(store, &a).await;
    insert(store, &b).await;
    // A rival wins b first; the group's write of b, from the same version, loses.
    let rival = answered(&b, 20);
    write(store, &b, &rival).await;
    let (a_after, b_after) = (answered(&a, 520), answered(&b, 300));
    let outcomes = store
        .compare_and_set_many(&[(&a, &a_after), (&b, &b_after)])
        .await
        .expect("compare_and_set_many");
    assert!(
        matches!(outcomes[..], [Ok(true), Ok(false)]),
        "a won, b lost: {outcomes:?}"
    );
    assert_job(&stored(store, &a.id).await, &a_after, "a as written");
    assert_job(
        &stored(store, &b.id).await,
        &rival,
        "b as the rival wrote it",
    );
}
