//! The shared store suite (`job_manager::fakes::store_suite`) against the MongoDB store, on a
//! database of its own that is dropped afterwards whether the suite passed or not.

use futures::FutureExt;
use futures::future::BoxFuture;
use job_manager::domain::{Machine, Pipeline};
use job_manager::fakes::store_suite::{self, CHECKS, Catalog};
use job_manager::ports::StoreError;
use job_manager::store::Store;

use crate::helpers::mongodb_uri;

/// Seeds the catalog through the store's own methods (the port only reads it).
struct StoreCatalog<'a>(&'a Store);

impl Catalog for StoreCatalog<'_> {
    fn put_machine<'a>(&'a self, machine: &'a Machine) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { self.0.put_machine(machine).await.map(drop) }.boxed()
    }

    fn put_pipeline<'a>(&'a self, pipeline: &'a Pipeline) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { self.0.put_pipeline(pipeline).await.map(drop) }.boxed()
    }
}

/// Drops the database `name` when it goes out of scope, also while a failed test unwinds. The
/// test's runtime may be unusable by then, so it connects anew on a runtime of its own.
struct DropDatabase {
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = mongodb::Client::with_uri_str(mongodb_uri()).await?;
                client.database(&name).drop().await?;
                client.shutdown().await;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "the test database {} was not dropped: {dropped:?}",
                self.name
            );
        }
    }
}

/// A store on a database of its own, dropped when the guard goes (also when the test fails).
async fn fresh_store() -> (Store, DropDatabase) {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let database = DropDatabase {
        name: format!("jm_test_{id}"),
    };
    let store = Store::connect(&mongodb_uri(), &database.name)
        .await
        .expect("store");
    (store, database)
}

#[tokio::test]
async fn the_mongodb_store_passes_the_shared_store_suite() {
    let (store, _database) = fresh_store().await;
    store.ensure_indexes().await.expect("indexes");
    let ran = store_suite::run(&store, &StoreCatalog(&store)).await;
    assert_eq!(ran, CHECKS.len());
    store.shutdown().await;
}

/// How the MongoDB store lays out a wide stage: the job document without the tasks, one
/// document per chunk of 256 tasks, the large ended stage before it in a record of its own, a
/// write replacing only the chunk it changed, and nothing left after the archive.
#[tokio::test]
async fn a_wide_stage_keeps_its_tasks_in_chunks_and_leaves_none_behind() {
    use job_manager::domain::{Timestamp, apply};
    use job_manager::fakes::{done, sample_job};
    use mongodb::bson::{Document, doc};

    let (store, _database) = fresh_store().await;
    let jobs = store.database().collection::<Document>("jobs");
    let chunks = store.database().collection::<Document>("job_tasks");
    let job = sample_job("chunks", 600);
    store.insert_job(&job).await.expect("insert");
    let stored = jobs
        .find_one(doc! {"_id": job.id.as_str()})
        .await
        .expect("find")
        .expect("the job");
    let stage = stored.get_document("current_stage").expect("a stage");
    assert!(
        !stage.contains_key("tasks"),
        "tasks out of the job document"
    );
    let pointers = stored.get_document("task_chunks").expect("pointers");
    assert_eq!(pointers.get_array("02").expect("stage 02").len(), 3);
    // Stage 01, ended with 600 outputs, is kept apart too: a stub in the job document.
    let split = &stored.get_array("stages").expect("stages")[1];
    let split = split.as_document().expect("stage 01");
    assert_eq!(split.get_str("id"), Ok("01"));
    assert_eq!(split.get_array("outputs").map(Vec::len), Ok(0));
    let record = stored.get_document("stage_records").expect("records");
    let record = record.get_str("01").expect("01's record");
    let record = chunks
        .find_one(doc! {"_id": record})
        .await
        .expect("find")
        .expect("the record");
    let outputs = record
        .get_document("record")
        .and_then(|r| r.get_array("outputs"));
    assert_eq!(outputs.map(Vec::len), Ok(600));
    let bytes = mongodb::bson::to_vec(&stored).expect("bytes").len();
    assert!(bytes < 8 * 1024, "the job document takes {bytes} bytes");
    // Three chunks and a record.
    let count = || chunks.count_documents(doc! {"job_id": job.id.as_str()});
    assert_eq!(count().await.expect("count"), 4);

    // A result for task 300 replaces chunk 1 only; the one it replaced is gone.
    let task = job.current_stage.as_ref().expect("stage").tasks[300]
        .task_id
        .clone();
    let event = done(&task, vec![serde_json::json!({"n": 300})]);
    let after = match apply(&job, &event, Timestamp::now()) {
        job_manager::domain::Decision::Apply { job, .. } => *job,
        other => panic!("{other:?}"),
    };
    assert!(store.compare_and_set(&job, &after).await.expect("write"));
    let written = jobs
        .find_one(doc! {"_id": job.id.as_str()})
        .await
        .expect("find")
        .expect("the job");
    let now = written.get_document("task_chunks").expect("pointers");
    let ids = |p: &Document| -> Vec<String> {
        p.get_array("02")
            .expect("02")
            .iter()
            .map(|id| id.as_str().expect("an id").to_owned())
            .collect()
    };
    let (old, new) = (ids(pointers), ids(now));
    assert_eq!(
        (old[0] == new[0], old[1] == new[1], old[2] == new[2]),
        (true, false, true)
    );
    assert_eq!(
        count().await.expect("count"),
        4,
        "the replaced chunk is deleted"
    );
    assert_eq!(
        store.load_job(&job.id).await.expect("load"),
        Some(after.clone())
    );

    let ended = aborted(&after);
    assert!(store.compare_and_set(&after, &ended).await.expect("write"));
    store.archive(&ended).await.expect("archive");
    assert_eq!(
        count().await.expect("count"),
        0,
        "no chunk after the archive"
    );

    // The same when jobs that end at once are archived together.
    let other = sample_job("chunks-many", 600);
    store.insert_job(&other).await.expect("insert");
    let count_other = || chunks.count_documents(doc! {"job_id": other.id.as_str()});
    assert_eq!(count_other().await.expect("count"), 4);
    let ended = aborted(&other);
    assert!(store.compare_and_set(&other, &ended).await.expect("write"));
    let moved = store.archive_many(&[&ended]).await.expect("archive_many");
    assert!(matches!(moved[..], [Ok(())]), "{moved:?}");
    assert_eq!(
        count_other().await.expect("count"),
        0,
        "no chunk after archive_many"
    );
    let record = store
        .load_history(&other.id)
        .await
        .expect("history")
        .expect("on record");
    assert_eq!(record.job, ended, "every task in the history record");
    store.shutdown().await;
}

/// A narrow job whose ended stage went apart (100 outputs of 200 bytes): its record goes with
/// `archive_many` too.
#[tokio::test]
async fn the_record_of_a_narrow_job_goes_with_its_archive() {
    use mongodb::bson::{Document, doc};

    let (store, _database) = fresh_store().await;
    let chunks = store.database().collection::<Document>("job_tasks");
    let narrow = large_split("records-narrow");
    store.insert_job(&narrow).await.expect("insert");
    let count_narrow = || chunks.count_documents(doc! {"job_id": narrow.id.as_str()});
    assert_eq!(
        count_narrow().await.expect("count"),
        1,
        "the split's record"
    );
    let ended = aborted(&narrow);
    assert!(store.compare_and_set(&narrow, &ended).await.expect("write"));
    let moved = store.archive_many(&[&ended]).await.expect("archive_many");
    assert!(matches!(moved[..], [Ok(())]), "{moved:?}");
    assert_eq!(count_narrow().await.expect("count"), 0, "no record left");
    store.shutdown().await;
}

/// A running job whose split (stage 01) ended with 100 outputs of 200 bytes each: over 16 KiB
/// as a record, while stage 02 has 100 tasks, too few to keep apart.
fn large_split(hash: &str) -> job_manager::domain::Job {
    use job_manager::domain::{Event, Timestamp, apply_in_place};
    use job_manager::fakes::{done, new_sample_job};
    let now = Timestamp::now();
    let mut job = new_sample_job(hash, now);
    apply_in_place(&mut job, &Event::Start, now).expect("starts");
    let split = job.current_stage.as_ref().expect("01").tasks[0]
        .task_id
        .clone();
    let parts = (0..100).map(|n| serde_json::json!({"part": n, "text": "x".repeat(200)}));
    apply_in_place(&mut job, &done(&split, parts.collect()), now).expect("recorded");
    job
}

/// The write tokens of a group commit stay in the `jobs` collection: the last few per job, not
/// in the job as read, and not in its history record.
#[tokio::test]
async fn group_commit_tokens_stay_in_the_active_job_and_never_reach_history() {
    use job_manager::domain::{Decision, Event, Job, Timestamp, apply};
    use job_manager::fakes::{done, sample_job};
    use mongodb::bson::{Document, doc};

    let (store, _database) = fresh_store().await;
    let step = |job: &Job, event: &Event| match apply(job, event, Timestamp::now()) {
        Decision::Apply { job, .. } => *job,
        Decision::Ignore(why) => panic!("ignored: {why:?}"),
    };
    let mut job = sample_job("tokens", 12);
    store.insert_job(&job).await.expect("insert");
    let tasks: Vec<_> = job.current_stage.as_ref().expect("in flight").tasks.clone();
    for task in &tasks[..11] {
        let next = step(
            &job,
            &done(&task.task_id, vec![serde_json::json!({"n": 1})]),
        );
        let outcomes = store
            .compare_and_set_many(&[(&job, &next)])
            .await
            .expect("compare_and_set_many");
        assert!(matches!(outcomes[..], [Ok(true)]), "{outcomes:?}");
        job = next;
    }
    let raw: Document = store
        .database()
        .collection::<Document>("jobs")
        .find_one(doc! {"_id": job.id.as_str()})
        .await
        .expect("find")
        .expect("stored");
    let tokens = raw.get_array("write_tokens").expect("write tokens kept");
    let versions: Vec<i64> = tokens
        .iter()
        .filter_map(|t| t.as_document()?.get_i64("v").ok())
        .collect();
    assert_eq!(
        versions,
        (4..=11).collect::<Vec<i64>>(),
        "the last 8, oldest first"
    );
    assert_eq!(
        store.load_job(&job.id).await.expect("load"),
        Some(job.clone())
    );
    let ended = step(&job, &Event::Abort);
    assert!(store.compare_and_set(&job, &ended).await.expect("cas"));
    store.archive(&ended).await.expect("archive");
    let history: Document = store
        .database()
        .collection::<Document>("history")
        .find_one(doc! {"_id": job.id.as_str()})
        .await
        .expect("find")
        .expect("on record");
    assert!(!history.contains_key("write_tokens"), "{history:?}");
    store.shutdown().await;
}

/// `job` aborted, as the engine writes it.
fn aborted(job: &job_manager::domain::Job) -> job_manager::domain::Job {
    use job_manager::domain::{Decision, Event, Timestamp, apply};
    match apply(job, &Event::Abort, Timestamp::now()) {
        Decision::Apply { job, .. } => *job,
        other => panic!("{other:?}"),
    }
}
