//! The ports: what the coordinator needs from the job store and from the broker, as traits.
//!
//! The MongoDB store (`store::Store`) and the RabbitMQ broker (`amqp::broker::RabbitBroker`)
//! implement them, from the outside in; so do the in-memory fakes in `fakes`, on which the
//! coordinator's parts and the sweep are unit-tested. A shared suite (`fakes::store_suite`)
//! runs against both the fake and the real store, so the fake cannot drift from what the store
//! does (docs/README.md, "The parts and how they depend on each other").
//!
//! The methods return boxed futures so that the coordinator can hold `Arc<dyn JobStore>` and
//! `Arc<dyn Broker>`: one allocation per call, next to a network round trip.

use futures::future::BoxFuture;

use crate::domain::{Job, JobId, Machine, Pipeline, StageId, TaskId, Timestamp};
use crate::messages::{JobCleanup, JobEvent, StageDispatch};

/// What went wrong talking to the job store. [`StoreError::is_transient`] tells whether a
/// retry of the same operation may succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The server was unreachable, busy, or failed the operation in a way a retry may pass.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A stored document does not have the shape the code expects.
    #[error("stored document is malformed: {0}")]
    Malformed(String),
    /// The server refused a write as sent (for example a document over its size limit).
    #[error("the database refused the write: {0}")]
    Refused(String),
    /// A value could not be converted to the store's format.
    #[error("cannot encode document: {0}")]
    Encode(String),
    /// The server failed the operation in a way a retry will not pass, for a reason that is not
    /// the value sent (an invalid option, a duplicate key from a racing upsert, …).
    #[error("the store failed the operation: {0}")]
    Permanent(String),
    /// Other writers kept changing the document, or the server asked to retry.
    #[error("{0}")]
    Contention(String),
}

impl StoreError {
    /// Whether a retry of the same operation may succeed: the server was unreachable, busy or
    /// lost a race. A document that does not encode or decode, or that the server refuses, is
    /// refused again on every retry.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Contention(_) => true,
            Self::Malformed(_) | Self::Refused(_) | Self::Encode(_) | Self::Permanent(_) => false,
        }
    }
}

/// Jobs read one by one, with how many documents were read and the last one's id (decoded or
/// not), so a caller can go on after it.
#[derive(Debug, Default, Clone)]
pub struct Found {
    pub jobs: Vec<Job>,
    pub read: usize,
    pub last: Option<String>,
}

/// Result of inserting a document with a chosen id: nothing is written over an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Created,
    AlreadyExists,
}

/// Result of putting a document with a chosen id: created, or written over the one there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
}

/// A history record: the archived run on top, plus the earlier runs it replaced.
#[derive(Debug, Clone)]
pub struct HistoryRecord {
    pub job: Job,
    pub previous_runs: Vec<Job>,
}

impl HistoryRecord {
    /// Whether one of the recorded runs issued `task_id`.
    pub fn issued(&self, task_id: &TaskId) -> bool {
        std::iter::once(&self.job)
            .chain(&self.previous_runs)
            .any(|run| run.issued(task_id))
    }
}

/// An outbox mark: the broker confirmed the dispatch of these task attempts of a job's run, in
/// its stage in flight `stage_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchMark {
    pub job_id: JobId,
    pub run_id: String,
    pub stage_id: StageId,
    pub task_ids: Vec<TaskId>,
    pub at: Timestamp,
    /// How many tasks the stage has (a store may keep a wide stage's tasks apart).
    pub stage_tasks: usize,
}

impl DispatchMark {
    /// The mark of `task_ids` of `job`'s run in stage `stage_id`, at `at`.
    pub fn new(job: &Job, stage_id: &StageId, task_ids: &[TaskId], at: Timestamp) -> Self {
        let stage_tasks = job
            .current_stage
            .as_ref()
            .filter(|stage| &stage.id == stage_id)
            .map_or(0, |stage| stage.tasks.len());
        Self {
            job_id: job.id.clone(),
            run_id: job.run_id.clone(),
            stage_id: stage_id.clone(),
            task_ids: task_ids.to_vec(),
            at,
            stage_tasks,
        }
    }
}

/// The most a job's record may take in the store. MongoDB refuses documents over 16 MiB; the
/// margin leaves room for the history record's own fields.
pub const MAX_JOB_BYTES: usize = 15 * 1024 * 1024;

/// How many earlier runs of the same file a history record keeps.
pub const MAX_PREVIOUS_RUNS: usize = 20;

/// The job store: active jobs written by compare-and-set, their history, and the machines and
/// pipelines a new job is built from (docs/consistency.md).
pub trait JobStore: Send + Sync {
    /// Inserts a new job; `AlreadyExists` when a job with its id is active.
    fn insert_job<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Inserted, StoreError>>;

    /// The active job with `id`, if any.
    fn load_job<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, StoreError>>;

    /// The run and version of the active job with `id`, if any, without reading the rest of it.
    fn job_stamp<'a>(
        &'a self,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<(String, i64)>, StoreError>>;

    /// Turns the stored `before` into `after` if the stored job is still `before`'s run at
    /// `before.version` (`after.version` is one more). Returns whether it won.
    fn compare_and_set<'a>(
        &'a self,
        before: &'a Job,
        after: &'a Job,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Many compare-and-sets, of different jobs, in one round trip (a group commit): each
    /// pair `(before, after)` is the compare-and-set of [`JobStore::compare_and_set`], atomic
    /// on its own and independent of the others (one that loses or fails stops none of the
    /// others). Returns one outcome per pair, in order: won, lost, or that pair's own error.
    /// The outer error says the whole command failed: no pair's outcome is known.
    fn compare_and_set_many<'a>(
        &'a self,
        writes: &'a [(&'a Job, &'a Job)],
    ) -> BoxFuture<'a, Result<Vec<Result<bool, StoreError>>, StoreError>>;

    /// Writes outbox marks, of any jobs, in one round trip: each sets `dispatched` on its task
    /// attempts if its job's run still has that stage in flight (else it changes nothing). It
    /// changes no version. An error says some marks may not have been written.
    fn mark_dispatched<'a>(
        &'a self,
        marks: &'a [DispatchMark],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Moves an ended job's run into history and removes it from the active jobs. Repeating
    /// it (after a crash between the two) finishes the move and changes nothing else.
    fn archive<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Moves many ended jobs' runs to history as [`JobStore::archive`] does, in one round trip
    /// per step for all of them where it can (a group commit). One outcome per job, in order;
    /// the outer error says no job was moved.
    fn archive_many<'a>(
        &'a self,
        jobs: &'a [&'a Job],
    ) -> BoxFuture<'a, Result<Vec<Result<(), StoreError>>, StoreError>>;

    /// The history record of the file with job id `id`.
    fn load_history<'a>(
        &'a self,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<HistoryRecord>, StoreError>>;

    /// The latest ended run of the file with job id `id` (the top of its history record),
    /// without reading the earlier runs.
    fn latest_run<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, StoreError>>;

    /// Ended jobs still among the active ones (a move to history that did not complete), in id
    /// order after `after`, at most `limit` (none for a limit of 0 or less).
    fn ended_jobs<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Found, StoreError>>;

    /// Active jobs the sweep should look at, in id order after `after`, at most `limit` (none
    /// for a limit of 0 or less):
    /// pending since before `cutoff`, or running with a pending task that is overdue at `now`
    /// or was issued before `cutoff` and never confirmed.
    fn jobs_needing_attention<'a>(
        &'a self,
        now: Timestamp,
        cutoff: Timestamp,
        after: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Found, StoreError>>;

    fn get_machine<'a>(&'a self, id: &'a str)
    -> BoxFuture<'a, Result<Option<Machine>, StoreError>>;

    fn get_pipeline<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pipeline>, StoreError>>;

    /// The size `job` takes as stored, to hold it under [`MAX_JOB_BYTES`].
    fn job_bytes(&self, job: &Job) -> Result<usize, StoreError>;

    /// The server's clock, if it reports one.
    fn server_time(
        &self,
    ) -> BoxFuture<'_, Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>>;

    /// Whether the store answers at all.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// A message for the events exchange and its routing key (`job.<status>`, `stage.completed` or
/// `job.cleanup`).
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    pub routing_key: String,
    pub event: EventBody,
}

/// What an [`Announced`] carries.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum EventBody {
    Job(JobEvent),
    Cleanup(JobCleanup),
}

impl EventBody {
    /// The AMQP `type` property of the message.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Job(_) => crate::messages::EVENT_TYPE,
            Self::Cleanup(_) => crate::messages::CLEANUP_TYPE,
        }
    }
}

/// What went wrong publishing to the broker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// No session, a closed channel, a refused declare or an unconfirmed publish; a retry may
    /// succeed.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    /// A message could not be encoded: the same on every retry.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

impl BrokerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The broker: task dispatches to workers' queues and job events, each confirmed before the
/// call returns (docs/protocol.md).
pub trait Broker: Send + Sync {
    /// Publishes `dispatches` to the queue of `worker_id` (declaring it first if needed), and
    /// returns once the broker confirmed every one.
    fn dispatch<'a>(
        &'a self,
        worker_id: &'a str,
        dispatches: &'a [StageDispatch],
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Publishes job events in order, each under its routing key, and returns once the
    /// broker confirmed them all.
    fn notify<'a>(&'a self, events: &'a [Announced]) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Whether a session with the broker is open now.
    fn is_connected(&self) -> bool;
}

/// What the consumer does with a delivery once its handler is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Its effect is durable, or it changes nothing: ack.
    Ack,
    /// It can never be processed: reject without requeue, so it is dead-lettered.
    Reject,
    /// Another try later, perhaps on another replica: nack with requeue.
    Requeue,
    /// The channel it came on closed; the broker delivers it again. Nothing to settle.
    Abandon,
}

/// What the result consumer hands each delivery to (the consumer knows AMQP, the handler knows
/// what a result means).
pub trait DeliveryHandler: Send + Sync + 'static {
    /// Handles one delivery's `body` to the end. `held` tells whether the delivery is still
    /// held (its channel open); `shutdown` asks to hand it back soon.
    fn handle<'a>(
        &'a self,
        body: &'a [u8],
        held: &'a (dyn Fn() -> bool + Send + Sync),
        shutdown: &'a tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'a, Settle>;
}
