//! Compare-and-sets of many jobs in one call (the group commit): each statement its own
//! compare-and-set, told its own outcome, whoever else wrote the job before or after it
//! (docs/consistency.md, "Group commit").

use super::{Catalog, applied, assert_job, hash, insert, stored, task_id, write};
use crate::domain::{Event, Job, Timestamp};
use crate::fakes::{done, new_sample_job, sample_job};
use crate::ports::JobStore;

/// Writes `writes` in one call and returns each one's outcome; panics on any error.
async fn many(store: &dyn JobStore, writes: &[(&Job, &Job)]) -> Vec<bool> {
    let outcomes = store
        .compare_and_set_many(writes)
        .await
        .expect("compare_and_set_many");
    assert_eq!(outcomes.len(), writes.len(), "one outcome per write");
    outcomes
        .into_iter()
        .enumerate()
        .map(|(n, o)| o.unwrap_or_else(|e| panic!("write {n} failed: {e}")))
        .collect()
}

/// `job` with the result of task `index` of its stage in flight recorded.
fn result_of(job: &Job, index: usize, what: &str) -> Job {
    let output = serde_json::json!({"done": what});
    applied(
        job,
        &done(&task_id(job, index), vec![output]),
        Timestamp::now(),
    )
}

/// Four jobs in one call: two win, and two lose to rivals that wrote first (one alone, one in
/// a call of its own). Each is told its own outcome, and each job holds exactly the write
/// that won.
pub(super) async fn compare_and_set_many_tells_each_statement_its_own_outcome(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let jobs: Vec<Job> = (0..4).map(|n| sample_job(&hash("many", n), 2)).collect();
    for job in &jobs {
        insert(store, job).await;
    }
    let rival_1 = result_of(&jobs[1], 1, "rival");
    write(store, &jobs[1], &rival_1).await;
    let rival_3 = result_of(&jobs[3], 1, "rival");
    assert_eq!(many(store, &[(&jobs[3], &rival_3)]).await, [true]);
    let mine: Vec<Job> = jobs.iter().map(|job| result_of(job, 0, "mine")).collect();
    let writes: Vec<(&Job, &Job)> = jobs.iter().zip(&mine).collect();
    assert_eq!(many(store, &writes).await, [true, false, true, false]);
    let expected = [&mine[0], &rival_1, &mine[2], &rival_3];
    for (job, expected) in jobs.iter().zip(expected) {
        assert_job(&stored(store, &job.id).await, expected, "after the call");
    }
    // The jobs go on from there, alone or many at a time.
    let next = result_of(&mine[0], 1, "next");
    write(store, &mine[0], &next).await;
    let next_1 = result_of(&rival_1, 0, "next");
    assert_eq!(many(store, &[(&rival_1, &next_1)]).await, [true]);
    assert_job(&stored(store, &jobs[1].id).await, &next_1, "written on");
}

/// A write that won is not told it lost because the job was written again right after it (in
/// the same call here, before its outcome is known), while another write of the call lost.
pub(super) async fn a_write_after_a_win_does_not_turn_the_win_into_a_loss(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = sample_job(&hash("many-after", 0), 3);
    let other = sample_job(&hash("many-after", 1), 2);
    insert(store, &job).await;
    insert(store, &other).await;
    let rival = result_of(&other, 1, "rival");
    write(store, &other, &rival).await;
    let first = result_of(&job, 0, "first");
    let second = result_of(&first, 1, "second");
    let stale = result_of(&other, 0, "stale");
    let writes = [(&job, &first), (&first, &second), (&other, &stale)];
    let outcomes = many(store, &writes).await;
    assert!(outcomes[0], "the first write of the job won");
    assert!(!outcomes[2], "the stale write lost");
    // The statements of a call need not run in order; whichever did, the outcome says it.
    let expected = if outcomes[1] { &second } else { &first };
    assert_job(&stored(store, &job.id).await, expected, "the job");
    assert_job(&stored(store, &other.id).await, &rival, "the rival's job");
}

/// A write of an earlier run loses against a rerun of the same file (same id, same version),
/// and so does a write of a job that is not stored, beside a write that wins.
pub(super) async fn compare_and_set_many_of_another_run_or_no_job_loses(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let earlier = new_sample_job(&hash("many-run", 0), Timestamp::now());
    insert(store, &earlier).await;
    let ended = applied(&earlier, &Event::Abort, Timestamp::now());
    write(store, &earlier, &ended).await;
    store.archive(&ended).await.expect("archive");
    let mut rerun = new_sample_job(&hash("many-run", 0), Timestamp::now());
    rerun.run_id = "the-rerun".into();
    insert(store, &rerun).await;
    let absent = new_sample_job(&hash("many-run", 1), Timestamp::now());
    let winner = new_sample_job(&hash("many-run", 2), Timestamp::now());
    insert(store, &winner).await;
    let late = applied(&earlier, &Event::Start, Timestamp::now());
    let created = applied(&absent, &Event::Start, Timestamp::now());
    let started = applied(&winner, &Event::Start, Timestamp::now());
    let writes = [(&earlier, &late), (&absent, &created), (&winner, &started)];
    assert_eq!(many(store, &writes).await, [false, false, true]);
    assert_job(&stored(store, &rerun.id).await, &rerun, "the rerun");
    let loaded = store.load_job(&absent.id).await.expect("load_job");
    assert_eq!(loaded, None, "the write created the job");
    assert_job(&stored(store, &winner.id).await, &started, "the winner");
}

pub(super) async fn compare_and_set_many_of_nothing_is_no_outcome(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    assert!(many(store, &[]).await.is_empty());
}
