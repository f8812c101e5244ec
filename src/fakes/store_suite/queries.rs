//! The sweep's queries (docs/consistency.md, "The outbox", "Crash points"), the size of a job,
//! the health probes and the catalog reads.

use std::collections::BTreeSet;
use std::future::Future;

use serde_json::json;

use super::{Catalog, hash, insert};
use crate::domain::{Job, JobStatus, Machine, TaskStatus, Timestamp};
use crate::fakes::{new_sample_job, sample_job, sample_pipeline};
use crate::ports::{Found, JobStore};

/// A time long before any other check's, so that their jobs are not overdue at [`at`] times.
fn at(seconds: u64) -> Timestamp {
    Timestamp::parse("2001-01-01T00:00:00Z")
        .expect("a valid time")
        .plus_seconds(seconds)
}

fn ids(found: &Found) -> Vec<String> {
    found
        .jobs
        .iter()
        .map(|j| j.id.as_str().to_owned())
        .collect()
}

/// Asserts that `query` (after, limit) selects, in id order, exactly `selected` of the check's
/// jobs `ours`, only jobs that `select` accepts, and that it pages by `after` and `limit` and
/// reports what it read.
async fn assert_query<Q, F>(
    query: Q,
    ours: &[Job],
    selected: &[&Job],
    select: impl Fn(&Job) -> bool,
) where
    Q: Fn(Option<String>, i64) -> F,
    F: Future<Output = Found>,
{
    let all = query(None, 10_000).await;
    let found = ids(&all);
    assert_eq!(all.read, found.len(), "read counts the jobs returned");
    assert_eq!(all.last.as_ref(), found.last(), "last is the last id read");
    assert!(
        found.windows(2).all(|w| w[0] < w[1]),
        "not in id order: {found:?}"
    );
    for job in &all.jobs {
        assert!(
            select(job),
            "job {} is selected but should not be: {job:?}",
            job.id
        );
    }
    let ours: BTreeSet<&str> = ours.iter().map(|j| j.id.as_str()).collect();
    let expected: BTreeSet<&str> = selected.iter().map(|j| j.id.as_str()).collect();
    let got: BTreeSet<&str> = found
        .iter()
        .map(String::as_str)
        .filter(|id| ours.contains(id))
        .collect();
    assert_eq!(got, expected, "the check's jobs selected");
    assert_pages_of_two(&query, &found).await;
    let first = expected
        .first()
        .expect("the check selects a job of its own");
    let rest = query(Some((*first).to_owned()), 10_000).await;
    let later: Vec<String> = found
        .iter()
        .filter(|id| id.as_str() > *first)
        .cloned()
        .collect();
    assert_eq!(ids(&rest), later, "after {first}");
    let none = query(None, 0).await;
    assert_eq!(
        (none.read, none.last, none.jobs.len()),
        (0, None, 0),
        "limit 0"
    );
}

/// Asserts that pages of two, each going on after the last id of the one before, read `found`.
async fn assert_pages_of_two<Q, F>(query: &Q, found: &[String])
where
    Q: Fn(Option<String>, i64) -> F,
    F: Future<Output = Found>,
{
    let (mut paged, mut after) = (Vec::new(), None);
    for _ in 0..=found.len() / 2 {
        let page = query(after.clone(), 2).await;
        assert!(page.read <= 2, "a page of two read {}", page.read);
        assert_eq!(page.read, page.jobs.len());
        paged.extend(ids(&page));
        if page.read < 2 {
            break;
        }
        after = page.last.clone();
        assert_eq!(after.as_ref(), paged.last(), "last of a page");
    }
    assert_eq!(paged, found, "the pages of two together");
}

pub(super) async fn ended_jobs_selects_exactly_the_ended_jobs_in_id_order(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    let statuses = [
        JobStatus::Finished,
        JobStatus::Failed,
        JobStatus::Aborted,
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::Held,
    ];
    let mut ours = Vec::new();
    for (n, status) in statuses.into_iter().enumerate() {
        let mut job = sample_job(&hash("ended", n), 1);
        job.status = status;
        insert(store, &job).await;
        ours.push(job);
    }
    let selected: Vec<&Job> = ours.iter().filter(|j| !j.status.is_active()).collect();
    let query = |after: Option<String>, limit| async move {
        store
            .ended_jobs(after.as_deref(), limit)
            .await
            .expect("ended_jobs")
    };
    assert_query(query, &ours, &selected, |job| !job.status.is_active()).await;
}

/// A task as the attention query sees it: status, issued, deadline, dispatched (seconds of
/// [`at`]).
type TaskShape = (TaskStatus, u64, u64, Option<u64>);

/// A running job of file `hash` whose stage in flight has tasks of these shapes.
fn running(hash: &str, tasks: &[TaskShape]) -> Job {
    let mut job = sample_job(hash, tasks.len());
    job.created = at(0);
    let stage = job.current_stage.as_mut().expect("a stage in flight");
    for (task, &(status, issued, deadline, dispatched)) in stage.tasks.iter_mut().zip(tasks) {
        task.status = status;
        task.issued = at(issued);
        task.deadline = at(deadline);
        task.dispatched = dispatched.map(at);
    }
    job
}

/// 300 tasks, done, marked and due later, except task `index` of shape `odd`.
fn wide(index: usize, odd: TaskShape) -> Vec<TaskShape> {
    let mut tasks = vec![(TaskStatus::Done, 100, 5000, Some(150)); 300];
    tasks[index] = odd;
    tasks
}

/// What the sweep must see, as the MongoDB store's query asks it.
fn needs_attention(job: &Job, now: Timestamp, cutoff: Timestamp) -> bool {
    match job.status {
        JobStatus::Pending => job.created < cutoff,
        JobStatus::Running | JobStatus::Paused | JobStatus::Held => {
            job.current_stage.iter().flat_map(|s| &s.tasks).any(|t| {
                t.status == TaskStatus::Pending
                    && (t.deadline < now || (t.dispatched.is_none() && t.issued < cutoff))
            })
        }
        _ => false,
    }
}

pub(super) async fn jobs_needing_attention_selects_exactly_what_the_sweep_must_see(
    store: &dyn JobStore,
    _: &dyn Catalog,
) {
    use TaskStatus::{Done, Failed, Pending, Queued, Skipped};
    let (now, cutoff) = (at(1000), at(500));
    let h = |n| hash("attention", n);
    let mut failed = running(&h(10), &[(Pending, 100, 900, None)]);
    failed.status = JobStatus::Failed;
    let with_status = |mut job: Job, status| {
        job.status = status;
        job
    };
    // (job, whether the sweep must see it)
    let cases = [
        (new_sample_job(&h(0), at(100)), true),
        (new_sample_job(&h(1), at(500)), false), // created at the cutoff
        (new_sample_job(&h(2), at(600)), false),
        (running(&h(3), &[(Pending, 100, 900, Some(150))]), true), // overdue
        (running(&h(4), &[(Pending, 100, 1000, Some(150))]), false), // due now
        (running(&h(5), &[(Pending, 100, 5000, None)]), true),     // never marked
        (running(&h(6), &[(Pending, 500, 5000, None)]), false),    // issued at the cutoff
        (running(&h(7), &[(Pending, 600, 5000, None)]), false),    // within the grace
        // Overdue and unmarked, but not pending; the pending one neither.
        (
            running(
                &h(8),
                &[(Done, 100, 900, None), (Pending, 600, 5000, Some(650))],
            ),
            false,
        ),
        (
            running(
                &h(9),
                &[(Done, 100, 200, Some(150)), (Pending, 100, 5000, None)],
            ),
            true,
        ),
        (failed, false), // ended
        (running(&h(11), &[(Failed, 100, 900, None)]), false),
        // Wide stages (their tasks apart from the job in the MongoDB store).
        (
            running(&h(12), &wide(299, (Pending, 100, 900, Some(150)))),
            true,
        ), // overdue
        (
            running(&h(13), &wide(280, (Pending, 100, 5000, None))),
            true,
        ), // never marked
        (
            running(&h(14), &wide(299, (Pending, 100, 5000, Some(150)))),
            false,
        ),
        // A paused or held job's tasks in flight still time out and are re-published;
        // queued and skipped tasks wait for nothing.
        (
            with_status(
                running(&h(15), &[(Pending, 100, 900, Some(150))]),
                JobStatus::Paused,
            ),
            true,
        ),
        (
            with_status(
                running(&h(16), &[(Pending, 100, 5000, None)]),
                JobStatus::Held,
            ),
            true,
        ),
        (
            with_status(
                running(&h(17), &[(Queued, 100, 900, None)]),
                JobStatus::Paused,
            ),
            false,
        ),
        (
            with_status(
                running(
                    &h(18),
                    &[(Skipped, 100, 900, None), (Failed, 100, 900, None)],
                ),
                JobStatus::Held,
            ),
            false,
        ),
        // The same for wide stages, whose tasks the MongoDB store keeps apart.
        (
            with_status(
                running(&h(19), &wide(299, (Pending, 100, 900, Some(150)))),
                JobStatus::Paused,
            ),
            true,
        ),
        (
            with_status(
                running(&h(20), &wide(280, (Queued, 100, 900, None))),
                JobStatus::Held,
            ),
            false,
        ),
    ];
    for (job, _) in &cases {
        insert(store, job).await;
    }
    let ours: Vec<Job> = cases.iter().map(|(job, _)| job.clone()).collect();
    let selected: Vec<&Job> = cases
        .iter()
        .filter(|(_, s)| *s)
        .map(|(job, _)| job)
        .collect();
    let query = |after: Option<String>, limit| async move {
        let found = store.jobs_needing_attention(now, cutoff, after.as_deref(), limit);
        found.await.expect("jobs_needing_attention")
    };
    assert_query(query, &ours, &selected, |job| {
        needs_attention(job, now, cutoff)
    })
    .await;
}

pub(super) async fn job_bytes_grows_with_the_job(store: &dyn JobStore, _: &dyn Catalog) {
    let new = new_sample_job(&hash("bytes", 0), Timestamp::now());
    let narrow = sample_job(&hash("bytes", 0), 1);
    let mut wide = sample_job(&hash("bytes", 0), 100);
    let bytes = |job: &Job| store.job_bytes(job).expect("job_bytes");
    assert!(bytes(&new) > 0);
    assert!(
        bytes(&narrow) > bytes(&new),
        "a started job is larger than a new one"
    );
    assert!(bytes(&wide) > bytes(&narrow), "a wider stage is larger");
    let before = bytes(&wide);
    let log = "x".repeat(1 << 20);
    wide.current_stage
        .as_mut()
        .expect("a stage in flight")
        .tasks[0]
        .log = Some(log);
    assert!(
        bytes(&wide) >= before + (1 << 20),
        "a 1 MiB log adds at least 1 MiB"
    );
}

pub(super) async fn ping_and_server_time_answer(store: &dyn JobStore, _: &dyn Catalog) {
    store.ping().await.expect("ping");
    store.server_time().await.expect("server_time");
}

pub(super) async fn machines_and_pipelines_read_back_as_put(
    store: &dyn JobStore,
    catalog: &dyn Catalog,
) {
    let mut pipeline = sample_pipeline();
    pipeline.id = "suite-pipeline".into();
    let machine: Machine = serde_json::from_value(json!({
        "machine_id": "suite-machine", "pipeline_id": "suite-pipeline",
        "configs": {"sensor": {"seed": 7, "names": ["a", "b"]}, "ratio": 0.5}
    }))
    .expect("a valid machine");
    catalog.put_pipeline(&pipeline).await.expect("put_pipeline");
    catalog.put_machine(&machine).await.expect("put_machine");
    let read = store
        .get_machine("suite-machine")
        .await
        .expect("get_machine");
    assert_eq!(read, Some(machine));
    let read = store
        .get_pipeline("suite-pipeline")
        .await
        .expect("get_pipeline");
    assert_eq!(read, Some(pipeline));
    let unknown = store
        .get_machine("suite-unknown")
        .await
        .expect("get_machine");
    assert_eq!(unknown, None);
    let unknown = store
        .get_pipeline("suite-unknown")
        .await
        .expect("get_pipeline");
    assert_eq!(unknown, None);
}
