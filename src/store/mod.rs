//! MongoDB: collections `jobs`, `history`, `pipelines` and `machines`.
//!
//! Every job write is a compare-and-set on `{_id, run_id, version}`. Archiving writes the run
//! into `history` (see `archive.rs`), then deletes it from `jobs` matched by id, run and version,
//! so a crash between the two leaves a job that the archive sweep can finish moving.
//!
//! Longer than the ~400 lines we aim for: jobs, pipelines and machines share it; the job-store
//! port of issue 11 will take the jobs part into a file of its own.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::raw::{RawArrayBuf, RawDocumentBuf};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod archive;
mod listing;
mod port;
mod update;

pub use listing::{ListFilter, Listed, Listing, PageCursor};

use crate::domain::{Job, JobId, JobStatus, Machine, Pipeline, StageId, TaskId, Timestamp};

/// The statuses of an active job, as stored.
const ACTIVE_STATUSES: [&str; 2] = ["pending", "running"];

pub use crate::ports::{
    Found, HistoryRecord, Inserted, MAX_JOB_BYTES, MAX_PREVIOUS_RUNS, StoreError,
};

/// The size of `job` as stored.
pub fn job_bytes(job: &Job) -> Result<usize, StoreError> {
    bson::to_vec(job)
        .map(|bytes| bytes.len())
        .map_err(|e| StoreError::Encode(e.to_string()))
}

/// Server error codes that refuse an operation as sent, so a retry of the same operation is
/// refused again: a bad or unparsable value, a key the server will not store, a duplicate key, a
/// document over the size limit, a failed validation. Any other server error (a primary
/// stepping down, a shutdown, an interrupted or timed-out operation, a stale routing table, …)
/// may pass on a retry; those are bounded by the consumer's tries.
const PERMANENT_CODES: [i32; 16] = [
    2, 4, 9, 14, 22, 52, 55, 56, 57, 66, 121, 10334, 11000, 11001, 17419, 17420,
];

/// A driver error as a store error: a document that does not decode is malformed, a value
/// that does not encode is refused as sent, a server error with a permanent code is refused;
/// anything else may pass on a retry.
impl From<mongodb::error::Error> for StoreError {
    fn from(error: mongodb::error::Error) -> Self {
        let text = format!("mongodb: {error}");
        match error.kind.as_ref() {
            ErrorKind::BsonDeserialization(_) => Self::Malformed(text),
            ErrorKind::BsonSerialization(_) | ErrorKind::InvalidArgument { .. } => {
                Self::Encode(text)
            }
            _ if is_transient(&error) => Self::Unavailable(text),
            _ => Self::Refused(text),
        }
    }
}

fn is_transient(error: &mongodb::error::Error) -> bool {
    if error.contains_label("RetryableWriteError")
        || error.contains_label("TransientTransactionError")
    {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::BsonSerialization(_)
        | ErrorKind::BsonDeserialization(_)
        | ErrorKind::InvalidArgument { .. } => false,
        ErrorKind::Command(_) | ErrorKind::Write(WriteFailure::WriteError(_)) => {
            server_code(error).is_none_or(|code| !PERMANENT_CODES.contains(&code))
        }
        _ => true,
    }
}

/// Handle to the four collections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    db: Database,
    jobs: Collection<Document>,
    /// The same collection, read straight into [`Job`] without an intermediate `Document`
    /// (a wide stage's job is megabytes, read on every write).
    typed_jobs: Collection<Job>,
    /// The same collection as raw BSON, for decoding document by document.
    raw_jobs: Collection<RawDocumentBuf>,
    history: Collection<Document>,
    /// The same collection as raw BSON, for archiving large records.
    raw_history: Collection<RawDocumentBuf>,
    pipelines: Collection<Document>,
    machines: Collection<Document>,
}

/// The string `_id`s a cursor yields.
async fn string_ids(cursor: mongodb::Cursor<Document>) -> Result<Vec<String>, StoreError> {
    let documents: Vec<Document> = cursor.try_collect().await?;
    Ok(documents
        .into_iter()
        .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
        .collect())
}

/// Inserts `document`; `AlreadyExists` when its `_id` is taken.
async fn insert(
    collection: &Collection<Document>,
    document: Document,
) -> Result<Inserted, StoreError> {
    match collection.insert_one(document).await {
        Ok(_) => Ok(Inserted::Created),
        Err(e) if is_duplicate_key(&e) => Ok(Inserted::AlreadyExists),
        Err(e) => Err(e.into()),
    }
}

/// The document with `_id` = `id`, its `_id` moved back to `id_field`.
async fn get_by_id<T: DeserializeOwned>(
    collection: &Collection<Document>,
    id: &str,
    id_field: &str,
) -> Result<Option<T>, StoreError> {
    match collection.find_one(doc! {"_id": id}).await? {
        Some(document) => from_doc(document, id_field).map(Some),
        None => Ok(None),
    }
}

/// Creates or replaces the document with `_id` = `id`; returns whether it created.
async fn put_by_id(
    collection: &Collection<Document>,
    id: &str,
    document: Document,
) -> Result<Inserted, StoreError> {
    let result = collection
        .replace_one(doc! {"_id": id}, document)
        .upsert(true)
        .await?;
    Ok(if result.upserted_id.is_some() {
        Inserted::Created
    } else {
        Inserted::AlreadyExists
    })
}

/// Deletes the document with `_id` = `id`; returns whether it existed.
async fn delete_by_id(collection: &Collection<Document>, id: &str) -> Result<bool, StoreError> {
    Ok(collection.delete_one(doc! {"_id": id}).await?.deleted_count == 1)
}

/// The server's error code, when the server answered with one.
fn server_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        _ => None,
    }
}

fn malformed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Malformed(error.to_string())
}

/// A stored job that does not decode is malformed, not a connection problem.
fn typed_error(error: mongodb::error::Error) -> StoreError {
    match error.kind.as_ref() {
        ErrorKind::BsonDeserialization(e) => malformed(e),
        _ => error.into(),
    }
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    server_code(error) == Some(11000)
}

/// Serialises `value` and moves its `id_field` to `_id`.
fn to_doc<T: Serialize>(value: &T, id_field: &str) -> Result<Document, StoreError> {
    let mut document = bson::to_document(value).map_err(|e| StoreError::Encode(e.to_string()))?;
    if let Some(id) = document.remove(id_field) {
        document.insert("_id", id);
    }
    Ok(document)
}

/// Moves `_id` back to `id_field` and deserialises.
fn from_doc<T: DeserializeOwned>(mut document: Document, id_field: &str) -> Result<T, StoreError> {
    if let Some(id) = document.remove("_id") {
        document.insert(id_field, id);
    }
    bson::from_document(document).map_err(malformed)
}

impl Store {
    /// Connects lazily: the driver only talks to the server on the first operation.
    pub async fn connect(uri: &str, database: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name = Some("job-manager".into());
        // Fail fast so an unreachable server turns into backoff and a failing readiness check
        // instead of requests that hang for the driver's 30 s default.
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.connect_timeout = Some(Duration::from_secs(5));
        let client = Client::with_options(options)?;
        Ok(Self::new(client.clone(), client.database(database)))
    }

    pub fn new(client: Client, db: Database) -> Self {
        Self {
            client,
            jobs: db.collection("jobs"),
            typed_jobs: db.collection("jobs"),
            raw_jobs: db.collection("jobs"),
            history: db.collection("history"),
            raw_history: db.collection("history"),
            pipelines: db.collection("pipelines"),
            machines: db.collection("machines"),
            db,
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Closes the driver's connection pools and stops its background tasks. Call once, when
    /// nothing uses this store (or a clone of it) any more; otherwise the tasks may outlive
    /// the runtime.
    pub async fn shutdown(&self) {
        self.client.clone().shutdown().immediate(true).await;
    }

    /// Creates the indexes the queries use. Safe to run on every start and on every replica.
    /// An index that exists under other options is left as it is, with a warning.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let index = |keys: Document| IndexModel::builder().keys(keys).build();
        // Listings sort by `created` descending, ties by `_id`, behind an optional equality filter.
        let listing = || {
            vec![
                index(doc! {"created": -1, "_id": 1}),
                index(doc! {"status": 1, "created": -1, "_id": 1}),
                index(doc! {"machine_id": 1, "created": -1, "_id": 1}),
                index(doc! {"pipeline_id": 1, "created": -1, "_id": 1}),
            ]
        };
        let mut jobs = listing();
        jobs.push(index(doc! {"current_stage.tasks.deadline": 1}));
        let plan = [
            (&self.jobs, jobs),
            (&self.history, listing()),
            (&self.machines, vec![index(doc! {"pipeline_id": 1})]),
        ];
        for (collection, indexes) in plan {
            match collection.create_indexes(indexes).await {
                Ok(_) => {}
                // IndexOptionsConflict, IndexKeySpecsConflict: an older definition is in place.
                Err(e) if matches!(server_code(&e), Some(85 | 86)) => {
                    tracing::warn!(collection = collection.name(), error = %e, "index exists with other options");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The server's own clock (`localTime` of `hello`), or `None` if the server does not say.
    pub async fn server_time(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let reply = self.db.run_command(doc! {"hello": 1}).await?;
        Ok(match reply.get("localTime") {
            Some(Bson::DateTime(time)) => {
                chrono::DateTime::from_timestamp_millis(time.timestamp_millis())
            }
            _ => None,
        })
    }

    /// Round-trips to the server.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    // ---- jobs ----

    /// Inserts a new job; `AlreadyExists` when a job with its id is active.
    pub async fn insert_job(&self, job: &Job) -> Result<Inserted, StoreError> {
        insert(&self.jobs, to_doc(job, "id")?).await
    }

    pub async fn load_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        self.typed_jobs
            .find_one(doc! {"_id": id.as_str()})
            .await
            .map_err(typed_error)
    }

    /// Turns the stored `before` into `after` if the stored version is still `before.version`,
    /// writing only the fields that differ. Returns whether it won.
    pub async fn compare_and_set(&self, before: &Job, after: &Job) -> Result<bool, StoreError> {
        debug_assert_eq!(after.version, before.version + 1);
        let update = update::job_update(before, after)?;
        // The `update` command, sent as raw BSON: the driver's `update_one` takes a `Document`.
        // The run is part of the match: a rerun of the same file keeps the job id and counts
        // versions from 0 again, so `{_id, version}` alone could match another run.
        let mut filter = RawDocumentBuf::new();
        filter.append("_id", before.id.as_str());
        filter.append("run_id", before.run_id.as_str());
        filter.append("version", before.version);
        let mut statement = RawDocumentBuf::new();
        statement.append("q", filter);
        statement.append("u", update);
        let mut updates = RawArrayBuf::new();
        updates.push(statement);
        let mut command = RawDocumentBuf::new();
        command.append("update", self.jobs.name());
        command.append("updates", updates);
        // A raw command does not take the connection string's write concern by itself.
        if let Some(concern) = self.jobs.write_concern()
            && let Ok(concern) = bson::to_raw_document_buf(concern)
            && !concern.is_empty()
        {
            command.append("writeConcern", concern);
        }
        let reply = self.db.run_raw_command(command).await?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(first) = errors.first()
        {
            let code = first.as_document().and_then(|d| d.get_i32("code").ok());
            if code.is_some_and(|c| PERMANENT_CODES.contains(&c)) {
                return Err(StoreError::Refused(first.to_string()));
            }
            return Err(StoreError::Contention(format!(
                "the server asked to retry: {first}"
            )));
        }
        // The write may not have reached the write concern's members (a primary stepping down):
        // not durable as asked, so not a success. A retry finds the change applied or not.
        if let Ok(error) = reply.get_document("writeConcernError") {
            return Err(StoreError::Contention(format!(
                "the write was not acknowledged as the write concern asks: {error}"
            )));
        }
        let matched = match reply.get("n") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            _ => return Err(malformed(format!("update reply without a count: {reply}"))),
        };
        Ok(matched == 1)
    }

    /// Records that the broker confirmed the dispatch of these task attempts (the outbox mark).
    /// It changes no version: it races with nothing that matters, and a lost mark only causes a
    /// harmless re-publish by the relay.
    pub async fn mark_dispatched(
        &self,
        job: &Job,
        stage_id: &StageId,
        task_ids: &[TaskId],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = task_ids.iter().map(TaskId::as_str).collect();
        let filter = doc! {
            "_id": job.id.as_str(), "run_id": job.run_id.as_str(), "current_stage.id": stage_id.as_str(),
        };
        self.jobs
            .update_one(
                filter,
                doc! {"$set": {"current_stage.tasks.$[t].dispatched": at.to_string()}},
            )
            .array_filters(vec![doc! {"t.task_id": {"$in": ids}}])
            .await?;
        Ok(())
    }

    /// How many jobs are pending or running.
    pub async fn count_active(&self) -> Result<u64, StoreError> {
        let filter = doc! {"status": {"$in": &ACTIVE_STATUSES[..]}};
        Ok(self.jobs.count_documents(filter).await?)
    }

    /// At most `limit` jobs matching `filter` whose id comes after `after`, in id order. Each
    /// document is decoded on its own: one that does not decode is logged, counted and skipped,
    /// so it cannot stop the others.
    async fn find_jobs(
        &self,
        mut filter: Document,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Found, StoreError> {
        if let Some(after) = after {
            filter.insert("_id", doc! {"$gt": after});
        }
        let mut cursor = self
            .raw_jobs
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await?;
        let mut found = Found::default();
        while let Some(raw) = cursor.try_next().await? {
            found.read += 1;
            found.last = raw.get_str("_id").ok().map(str::to_owned);
            match bson::from_slice::<Job>(raw.as_bytes()) {
                Ok(job) => found.jobs.push(job),
                Err(error) => {
                    crate::meter::undecodable("jobs");
                    let id = raw.get("_id").ok().flatten().map(|v| format!("{v:?}"));
                    tracing::warn!(id = id.as_deref().unwrap_or("?"), %error, "a stored job does not decode; skipped");
                }
            }
        }
        Ok(found)
    }

    /// Jobs that ended but are still in `jobs` (a move to history that did not complete), in id
    /// order after `after`.
    pub async fn ended_jobs(&self, after: Option<&str>, limit: i64) -> Result<Found, StoreError> {
        let filter = doc! {"status": {"$nin": &ACTIVE_STATUSES[..]}};
        self.find_jobs(filter, after, limit).await
    }

    /// Active jobs the sweep should look at, in id order after `after`: pending since before
    /// `cutoff`, or running with a task that is overdue at `now` or was recorded before
    /// `cutoff` and never confirmed. The last id read lets the next call go on from there (so
    /// a batch of jobs that fail every time cannot hide the rest).
    pub async fn jobs_needing_attention(
        &self,
        now: Timestamp,
        cutoff: Timestamp,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Found, StoreError> {
        let filter = doc! {"$or": [
            {"status": JobStatus::Pending.as_str(), "created": {"$lt": cutoff.to_string()}},
            {"status": JobStatus::Running.as_str(), "current_stage.tasks": {"$elemMatch": {
                "status": "pending", "deadline": {"$lt": now.to_string()}}}},
            {"status": JobStatus::Running.as_str(), "current_stage.tasks": {"$elemMatch": {
                "status": "pending", "dispatched": {"$exists": false}, "issued": {"$lt": cutoff.to_string()}}}},
        ]};
        self.find_jobs(filter, after, limit).await
    }

    // ---- history ----

    pub async fn load_history(&self, id: &JobId) -> Result<Option<HistoryRecord>, StoreError> {
        let Some(mut document) = self.history.find_one(doc! {"_id": id.as_str()}).await? else {
            return Ok(None);
        };
        let previous_runs = match document.remove("previous_runs") {
            Some(Bson::Array(runs)) => runs
                .into_iter()
                .filter_map(|run| match run {
                    Bson::Document(d) => from_doc(d, "id")
                        .inspect_err(|error| {
                            crate::meter::undecodable("history");
                            tracing::warn!(job_id = %id, %error, "an earlier run in history does not decode; not shown");
                        })
                        .ok(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Some(HistoryRecord {
            job: from_doc(document, "id")?,
            previous_runs,
        }))
    }

    // ---- pipelines ----

    pub async fn insert_pipeline(&self, pipeline: &Pipeline) -> Result<Inserted, StoreError> {
        insert(&self.pipelines, to_doc(pipeline, "id")?).await
    }

    /// Creates or replaces; returns whether it created.
    pub async fn put_pipeline(&self, pipeline: &Pipeline) -> Result<Inserted, StoreError> {
        put_by_id(&self.pipelines, &pipeline.id, to_doc(pipeline, "id")?).await
    }

    pub async fn get_pipeline(&self, id: &str) -> Result<Option<Pipeline>, StoreError> {
        get_by_id(&self.pipelines, id, "id").await
    }

    /// Ids of the registered pipelines, in id order.
    pub async fn pipeline_ids(&self) -> Result<Vec<String>, StoreError> {
        let cursor = self
            .pipelines
            .find(doc! {})
            .projection(doc! {"_id": 1})
            .sort(doc! {"_id": 1})
            .await?;
        string_ids(cursor).await
    }

    /// Deletes; returns whether it existed.
    pub async fn delete_pipeline(&self, id: &str) -> Result<bool, StoreError> {
        delete_by_id(&self.pipelines, id).await
    }

    /// Machines that run the pipeline, at most `limit`.
    pub async fn machines_using(
        &self,
        pipeline_id: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let cursor = self
            .machines
            .find(doc! {"pipeline_id": pipeline_id})
            .projection(doc! {"_id": 1})
            .limit(limit)
            .await?;
        string_ids(cursor).await
    }

    // ---- machines ----

    /// Creates or replaces; returns whether it created.
    pub async fn put_machine(&self, machine: &Machine) -> Result<Inserted, StoreError> {
        put_by_id(
            &self.machines,
            &machine.machine_id,
            to_doc(machine, "machine_id")?,
        )
        .await
    }

    pub async fn get_machine(&self, id: &str) -> Result<Option<Machine>, StoreError> {
        get_by_id(&self.machines, id, "machine_id").await
    }

    /// Deletes; returns whether it existed.
    pub async fn delete_machine(&self, id: &str) -> Result<bool, StoreError> {
        delete_by_id(&self.machines, id).await
    }
}
