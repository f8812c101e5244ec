//! The move of an ended run to history: idempotent, safe after a crash between its two steps,
//! keeping earlier runs oldest first and never touching a later run (docs/consistency.md,
//! "Archive"; docs/semantics.md, "Reruns and run ids").

use super::{Catalog, applied, assert_job, hash, insert, stored, write};
use crate::domain::{Event, Job, JobId, Timestamp};
use crate::fakes::{new_sample_job, sample_job};
use crate::ports::{HistoryRecord, JobStore, MAX_PREVIOUS_RUNS};

/// Runs file `hash` once more as run `run` (inserted, aborted), archives it and returns the
/// archived run.
async fn archived_run(store: &dyn JobStore, hash: &str, run: &str) -> Job {
    let mut job = new_sample_job(hash, Timestamp::now());
    job.run_id = run.to_owned();
    insert(store, &job).await;
    let ended = applied(&job, &Event::Abort, Timestamp::now());
    write(store, &job, &ended).await;
    store.archive(&ended).await.expect("archive");
    ended
}

async fn history(store: &dyn JobStore, id: &JobId) -> HistoryRecord {
    store
        .load_history(id)
        .await
        .expect("load_history")
        .unwrap_or_else(|| panic!("no history record of job {id}"))
}

/// The run ids of a record: the earlier runs, oldest first, then the one on top.
fn run_ids(record: &HistoryRecord) -> Vec<&str> {
    let earlier = record.previous_runs.iter().map(|r| r.run_id.as_str());
    earlier.chain([record.job.run_id.as_str()]).collect()
}

async fn assert_not_active(store: &dyn JobStore, id: &JobId) {
    let loaded = store.load_job(id).await.expect("load_job");
    assert_eq!(loaded, None, "job {id} is still among the active jobs");
}

pub(super) async fn archive_moves_the_run_to_history_and_is_idempotent(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let job = sample_job(&hash("archive", 0), 2);
    insert(store, &job).await;
    let ended = applied(&job, &Event::Abort, Timestamp::now());
    write(store, &job, &ended).await;
    for attempt in 0..2 {
        store.archive(&ended).await.expect("archive");
        assert_not_active(store, &job.id).await;
        let record = history(store, &job.id).await;
        assert_job(
            &record.job,
            &ended,
            &format!("archive {attempt}: the run on record"),
        );
        assert!(record.previous_runs.is_empty(), "archive {attempt}");
    }
    let ended_jobs = store.ended_jobs(None, 10_000).await.expect("ended_jobs");
    assert!(
        !ended_jobs.jobs.iter().any(|j| j.id == job.id),
        "still listed as ended"
    );
}

/// The history write happened, the delete did not (a crash): archiving again only deletes.
pub(super) async fn archive_after_a_crash_between_its_steps_only_deletes(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let ended = archived_run(store, &hash("archive-crash", 0), "run-0").await;
    insert(store, &ended).await;
    store.archive(&ended).await.expect("archive");
    assert_not_active(store, &ended.id).await;
    let record = history(store, &ended.id).await;
    assert_job(&record.job, &ended, "the run on record");
    assert!(
        record.previous_runs.is_empty(),
        "the run is on record twice"
    );
}

pub(super) async fn archive_keeps_earlier_runs_oldest_first(store: &dyn JobStore, _: &dyn Catalog) {
    let file = hash("archive-runs", 0);
    let mut runs = Vec::new();
    for n in 0..3 {
        runs.push(archived_run(store, &file, &format!("run-{n}")).await);
    }
    let record = history(store, &runs[0].id).await;
    assert_eq!(
        run_ids(&record),
        ["run-0", "run-1", "run-2"],
        "oldest first"
    );
    assert_job(&record.job, &runs[2], "the latest run on top");
    for (n, run) in record.previous_runs.iter().enumerate() {
        assert_job(run, &runs[n], &format!("earlier run {n}"));
    }
}

pub(super) async fn archive_keeps_at_most_max_previous_runs_and_never_revives_a_dropped_one(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let file = hash("archive-cap", 0);
    let mut runs = Vec::new();
    for n in 0..MAX_PREVIOUS_RUNS + 2 {
        runs.push(archived_run(store, &file, &format!("run-{n:02}")).await);
    }
    let expected: Vec<&str> = runs[1..].iter().map(|r| r.run_id.as_str()).collect();
    let record = history(store, &runs[0].id).await;
    assert_eq!(run_ids(&record), expected, "the oldest run is dropped");
    // Late archivers of a dropped run and of a kept one: nothing changes.
    for late in [&runs[0], &runs[5]] {
        store.archive(late).await.expect("archive");
        let record = history(store, &runs[0].id).await;
        assert_eq!(
            run_ids(&record),
            expected,
            "after a late archive of {}",
            late.run_id
        );
    }
}

/// A late archiver of the earlier run, at the version the rerun has now, must not delete it.
pub(super) async fn a_late_archive_of_an_earlier_run_keeps_the_later_active_run(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let file = hash("archive-late", 0);
    let earlier = archived_run(store, &file, "run-a").await;
    let mut rerun = new_sample_job(&file, Timestamp::now());
    rerun.run_id = "run-b".into();
    insert(store, &rerun).await;
    let started = applied(&rerun, &Event::Start, Timestamp::now());
    write(store, &rerun, &started).await;
    assert_eq!(
        started.version, earlier.version,
        "the runs are at the same version"
    );
    store.archive(&earlier).await.expect("archive");
    assert_job(
        &stored(store, &rerun.id).await,
        &started,
        "the rerun changed",
    );
    let record = history(store, &rerun.id).await;
    assert_eq!(run_ids(&record), ["run-a"]);
}

/// An ended run of file `hash` as run `run`, inserted and written, not archived.
async fn ended_run(store: &dyn JobStore, hash: &str, run: &str) -> Job {
    let mut job = new_sample_job(hash, Timestamp::now());
    job.run_id = run.to_owned();
    insert(store, &job).await;
    let ended = applied(&job, &Event::Abort, Timestamp::now());
    write(store, &job, &ended).await;
    ended
}

/// Many jobs moved in one call, each as a move alone would: new files, a rerun whose file has
/// a record, a run whose record was written before a crash, and the same job twice.
pub(super) async fn archive_many_moves_each_run_as_archive_alone_does(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let fresh = ended_run(store, &hash("archive-many", 0), "run-0").await;
    let other = ended_run(store, &hash("archive-many", 1), "run-0").await;
    let earlier = archived_run(store, &hash("archive-many", 2), "run-0").await;
    let rerun = ended_run(store, &hash("archive-many", 2), "run-1").await;
    let crashed = archived_run(store, &hash("archive-many", 3), "run-0").await;
    insert(store, &crashed).await;
    let jobs = [&fresh, &other, &rerun, &crashed, &fresh];
    let outcomes = store.archive_many(&jobs).await.expect("archive_many");
    assert_eq!(outcomes.len(), jobs.len(), "one outcome per job");
    for (n, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_ok(), "job {n}: {outcome:?}");
    }
    for job in [&fresh, &other, &crashed] {
        assert_not_active(store, &job.id).await;
        let record = history(store, &job.id).await;
        assert_job(&record.job, job, "the run on record");
        assert!(
            record.previous_runs.is_empty(),
            "{}: runs on record",
            job.id
        );
    }
    assert_not_active(store, &rerun.id).await;
    let record = history(store, &rerun.id).await;
    assert_eq!(run_ids(&record), ["run-0", "run-1"]);
    assert_job(&record.job, &rerun, "the rerun on top");
    assert_job(&record.previous_runs[0], &earlier, "the earlier run");
    let none = store.archive_many(&[]).await.expect("archive_many");
    assert!(none.is_empty(), "no jobs, no outcomes");
}

pub(super) async fn the_latest_run_is_the_top_of_history(store: &dyn JobStore, _: &dyn Catalog) {
    let file = hash("latest", 0);
    let id = new_sample_job(&file, Timestamp::now()).id;
    assert_eq!(store.latest_run(&id).await.expect("latest_run"), None);
    archived_run(store, &file, "run-1").await;
    let second = archived_run(store, &file, "run-2").await;
    let latest = store
        .latest_run(&id)
        .await
        .expect("latest_run")
        .expect("a run");
    assert_job(&latest, &second, "the latest run");
    assert_eq!(run_ids(&history(store, &id).await), ["run-1", "run-2"]);
}
