//! Insert, load and compare-and-set (docs/consistency.md, "Compare-and-set").

use super::{Catalog, applied, assert_job, failure, hash, id_of, insert, stored, task_id, write};
use crate::domain::{Event, JobStatus, Timestamp};
use crate::fakes::{done, new_sample_job};
use crate::ports::{Inserted, JobStore};

pub(super) async fn insert_then_already_exists_for_the_same_id(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = new_sample_job(&hash("insert", 0), Timestamp::now());
    insert(store, &job).await;
    assert_job(
        &stored(store, &job.id).await,
        &job,
        "the job reads back as inserted",
    );
    // Another run of the same file has the same id: refused while this one is stored.
    let mut rerun = new_sample_job(&hash("insert", 0), Timestamp::now());
    rerun.run_id = "another-run".into();
    let inserted = store.insert_job(&rerun).await.expect("insert_job");
    assert_eq!(inserted, Inserted::AlreadyExists);
    assert_job(
        &stored(store, &job.id).await,
        &job,
        "the first insert stays",
    );
}

pub(super) async fn load_of_an_unknown_id_is_none(store: &dyn JobStore, _: &dyn Catalog) {
    let id = id_of(&hash("unknown", 0));
    assert_eq!(store.load_job(&id).await.expect("load_job"), None);
    let history = store.load_history(&id).await.expect("load_history");
    assert!(history.is_none(), "no history of an unknown job");
}

pub(super) async fn the_stamp_is_the_run_and_version_of_the_active_job(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = new_sample_job(&hash("stamp", 0), Timestamp::now());
    assert_eq!(store.job_stamp(&job.id).await.expect("job_stamp"), None);
    insert(store, &job).await;
    let stamp = store.job_stamp(&job.id).await.expect("job_stamp");
    assert_eq!(stamp, Some((job.run_id.clone(), job.version)));
    let started = applied(&job, &Event::Start, Timestamp::now());
    write(store, &job, &started).await;
    let stamp = store.job_stamp(&job.id).await.expect("job_stamp");
    assert_eq!(stamp, Some((job.run_id.clone(), job.version + 1)));
}

pub(super) async fn compare_and_set_wins_on_its_run_and_version(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = new_sample_job(&hash("cas-wins", 0), Timestamp::now());
    insert(store, &job).await;
    let started = applied(&job, &Event::Start, Timestamp::now());
    assert_eq!(started.version, 1);
    write(store, &job, &started).await;
    assert_job(&stored(store, &job.id).await, &started, "the write");
}

/// A whole run, from start to finish through a fan-out, a retry and the end of the job, each
/// step written from the stored copy of the step before: the store keeps exactly what the
/// engine made (stages pushed, the stage in flight replaced or removed, task fields set and
/// unset).
pub(super) async fn compare_and_set_stores_each_step_of_a_run_exactly(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = new_sample_job(&hash("cas-run", 0), Timestamp::now());
    insert(store, &job).await;
    let mut current = stored(store, &job.id).await;
    let mut step = |event: Event| {
        let next = applied(&current, &event, Timestamp::now());
        let before = std::mem::replace(&mut current, next.clone());
        (before, next)
    };
    let mut steps = vec![step(Event::Start)];
    let split = task_id(&steps[0].1, 0);
    let parts = (0..3).map(|n| serde_json::json!({"part": n})).collect();
    steps.push(step(done(&split, parts)));
    let first = task_id(&steps[1].1, 0);
    steps.push(step(failure(&first)));
    let retried = task_id(&steps[2].1, 0);
    assert_ne!(retried, first, "a retry issues a new task id");
    for (n, id) in [
        (1, task_id(&steps[2].1, 1)),
        (0, retried),
        (2, task_id(&steps[2].1, 2)),
    ] {
        let output = serde_json::json!({"done": n, "list": [1, null, {"x": 2.5}]});
        steps.push(step(done(&id, vec![output])));
    }
    assert_eq!(steps.last().expect("steps").1.status, JobStatus::Finished);
    for (n, (before, after)) in steps.iter().enumerate() {
        write(store, before, after).await;
        assert_job(&stored(store, &job.id).await, after, &format!("step {n}"));
    }
}

pub(super) async fn compare_and_set_loses_on_a_stale_version(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = new_sample_job(&hash("cas-stale", 0), Timestamp::now());
    insert(store, &job).await;
    let started = applied(&job, &Event::Start, Timestamp::now());
    write(store, &job, &started).await;
    // A rival that read version 0 too, and aborts.
    let aborted = applied(&job, &Event::Abort, Timestamp::now());
    let won = store.compare_and_set(&job, &aborted).await.expect("cas");
    assert!(!won, "a write from a stale version wins");
    assert_job(
        &stored(store, &job.id).await,
        &started,
        "the stale write changed the job",
    );
}

/// A rerun keeps the job id and counts versions from 0 again: a late writer of the earlier
/// run, at the same version, must not touch the rerun.
pub(super) async fn compare_and_set_loses_on_another_run_of_the_same_job(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let earlier = new_sample_job(&hash("cas-run-id", 0), Timestamp::now());
    insert(store, &earlier).await;
    let ended = applied(&earlier, &Event::Abort, Timestamp::now());
    write(store, &earlier, &ended).await;
    store.archive(&ended).await.expect("archive");
    let mut rerun = new_sample_job(&hash("cas-run-id", 0), Timestamp::now());
    rerun.run_id = "the-rerun".into();
    insert(store, &rerun).await;
    assert_eq!(
        (rerun.id.clone(), rerun.version),
        (earlier.id.clone(), earlier.version)
    );
    let late = applied(&earlier, &Event::Start, Timestamp::now());
    let won = store.compare_and_set(&earlier, &late).await.expect("cas");
    assert!(!won, "a write of the earlier run won against the rerun");
    assert_job(&stored(store, &rerun.id).await, &rerun, "the rerun changed");
}

pub(super) async fn compare_and_set_of_a_job_not_stored_loses_and_creates_nothing(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = new_sample_job(&hash("cas-absent", 0), Timestamp::now());
    let started = applied(&job, &Event::Start, Timestamp::now());
    let won = store.compare_and_set(&job, &started).await.expect("cas");
    assert!(!won, "a write to a job that is not stored won");
    let loaded = store.load_job(&job.id).await.expect("load_job");
    assert_eq!(loaded, None, "the write created the job");
}
