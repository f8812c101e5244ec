//! MongoDB: collections `jobs`, `history`, `pipelines` and `machines`, and `job_tasks` for the
//! tasks of wide stages and the records of large ended stages.
//!
//! Every job write is a compare-and-set on `{_id, run_id, version}` (docs/consistency.md,
//! "Compare-and-set"). Archiving writes the run into `history`, then deletes it from `jobs`
//! matched by id, run and version, so a crash between the two leaves a job that the archive
//! sweep can finish moving (docs/consistency.md, "Archive").
//!
//! Layout: this file holds the handle, its connection and indexes; `jobs.rs` the active jobs
//! (insert, load, compare-and-set, the outbox mark, the sweep's queries) with `update.rs`
//! building the compare-and-set's update and `chunks.rs` keeping wide stages' tasks apart;
//! `group.rs` the compare-and-sets of many jobs in one command (group commit); `archive.rs` the
//! history, with `archive_many.rs` moving many jobs at once; `catalog.rs` pipelines and
//! machines; `listing.rs` the paged listings of the REST API; `documents.rs` documents kept by
//! id; `errors.rs` which driver errors are transient; `port.rs` the [`JobStore`] port
//! (`crate::ports`) over all of it.
//!
//! [`JobStore`]: crate::ports::JobStore

use std::time::Duration;

use mongodb::bson::raw::RawDocumentBuf;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database, IndexModel};

mod apart;
mod archive;
mod archive_many;
mod catalog;
mod chunk_upkeep;
mod chunks;
mod documents;
mod errors;
mod group;
mod jobs;
mod listing;
mod port;
mod update;

pub use jobs::job_bytes;
pub use listing::{ListFilter, Listed, Listing, PageCursor};

use errors::server_code;

/// The statuses of an active job, as stored.
const ACTIVE_STATUSES: [&str; 4] = ["pending", "running", "paused", "held"];
/// The statuses of an active job that has started, and so has tasks that may be in flight.
const STARTED_STATUSES: [&str; 3] = ["running", "paused", "held"];

pub use crate::ports::{
    Found, HistoryRecord, Inserted, MAX_JOB_BYTES, MAX_PREVIOUS_RUNS, StoreError, Written,
};

/// Handle to the four collections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    db: Database,
    jobs: Collection<Document>,
    /// The same collection as raw BSON, for decoding document by document.
    raw_jobs: Collection<RawDocumentBuf>,
    history: Collection<Document>,
    /// The same collection as raw BSON, for archiving large records.
    raw_history: Collection<RawDocumentBuf>,
    pipelines: Collection<Document>,
    machines: Collection<Document>,
    /// `job_tasks`: the tasks of wide stages, in chunks (`chunks.rs`), and the records of large
    /// ended stages (`apart.rs`).
    chunks: Collection<Document>,
    raw_chunks: Collection<RawDocumentBuf>,
    typed_chunks: Collection<chunks::ChunkIn>,
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
            raw_jobs: db.collection("jobs"),
            history: db.collection("history"),
            raw_history: db.collection("history"),
            pipelines: db.collection("pipelines"),
            machines: db.collection("machines"),
            chunks: db.collection("job_tasks"),
            raw_chunks: db.collection("job_tasks"),
            typed_chunks: db.collection("job_tasks"),
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
            (
                &self.chunks,
                vec![
                    index(doc! {"job_id": 1, "run_id": 1}),
                    index(doc! {"tasks.deadline": 1}),
                ],
            ),
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
}
