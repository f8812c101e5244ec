//! The job store in memory, with the semantics of the MongoDB store that the coordinator and
//! the sweep rely on (checked by [`super::store_suite`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::domain::{Job, JobId, JobStatus, Machine, Pipeline, TaskStatus, Timestamp};
use crate::ports::{
    DispatchMark, Found, HistoryRecord, Inserted, JobStore, MAX_PREVIOUS_RUNS, StoreError,
};

use super::store_suite::Catalog;

/// An operation of the store, to make it fail with [`MemoryStore::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Load,
    /// A compare-and-set, alone or as a statement of `compare_and_set_many`.
    CompareAndSet,
    /// A `compare_and_set_many` as a whole (its failure fails every statement).
    CompareAndSetMany,
    MarkDispatched,
    /// An archive, alone or as one job of `archive_many`.
    Archive,
    /// An `archive_many` as a whole (its failure fails every job).
    ArchiveMany,
    Find,
    Ping,
    /// `load_history`.
    History,
    /// `get_machine` and `get_pipeline`.
    Catalog,
}

/// A change another writer makes just before a compare-and-set is checked.
type Rival = Box<dyn FnOnce(&mut Job) + Send>;

#[derive(Default)]
struct State {
    /// Active jobs by id, in id order (as the store's `_id` index reads them).
    jobs: BTreeMap<String, Job>,
    history: HashMap<String, HistoryRecord>,
    machines: HashMap<String, Machine>,
    pipelines: HashMap<String, Pipeline>,
    /// What the next calls of an operation do: fail with the error, or (`None`) pass.
    failures: HashMap<Op, VecDeque<Option<StoreError>>>,
    rivals: VecDeque<Rival>,
    /// Rivals of one job, by id: they come before that job's next compare-and-set.
    rivals_of: HashMap<String, VecDeque<Rival>>,
    writes: usize,
    /// Compare-and-set commands: one per `compare_and_set`, one per `compare_and_set_many`
    /// with any statement.
    commands: usize,
    /// Archive calls: one per `archive`, one per `archive_many` with any job.
    archive_calls: usize,
    conflicts: usize,
    marks: usize,
    loads: usize,
}

/// The store in memory. Cheap to clone; clones share the data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Read by every compare-and-set; [`MemoryStore::hold_writes`] takes it.
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next call of `op` fail with `error` (after the calls queued before it).
    pub fn fail_next(&self, op: Op, error: StoreError) {
        self.lock()
            .failures
            .entry(op)
            .or_default()
            .push_back(Some(error));
    }

    /// Lets the next call of `op` pass (after the calls queued before it), so that a failure
    /// queued after it hits the call after.
    pub fn pass_next(&self, op: Op) {
        self.lock().failures.entry(op).or_default().push_back(None);
    }

    /// Holds every compare-and-set until the returned guard drops, so that events pile up
    /// behind a write in progress.
    pub async fn hold_writes(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }

    /// Lets a rival writer change the stored job (and move its version on) just before the
    /// next compare-and-set is checked, so that compare-and-set loses.
    pub fn rival_before_next_write(&self, change: impl FnOnce(&mut Job) + Send + 'static) {
        self.lock().rivals.push_back(Box::new(change));
    }

    /// Lets a rival writer change the stored job `id` just before that job's next
    /// compare-and-set is checked (alone or in a batch), so that compare-and-set loses.
    pub fn rival_before_next_write_of(
        &self,
        id: &JobId,
        change: impl FnOnce(&mut Job) + Send + 'static,
    ) {
        let mut state = self.lock();
        let rivals = state.rivals_of.entry(id.as_str().to_owned()).or_default();
        rivals.push_back(Box::new(change));
    }

    pub fn put_machine(&self, machine: Machine) {
        self.lock()
            .machines
            .insert(machine.machine_id.clone(), machine);
    }

    pub fn put_pipeline(&self, pipeline: Pipeline) {
        self.lock().pipelines.insert(pipeline.id.clone(), pipeline);
    }

    /// The stored active job, as it is now.
    pub fn job(&self, id: &JobId) -> Option<Job> {
        self.lock().jobs.get(id.as_str()).cloned()
    }

    /// Puts `job` among the active jobs as it is, replacing any (a test's starting point).
    pub fn put_job(&self, job: Job) {
        self.lock().jobs.insert(job.id.as_str().to_owned(), job);
    }

    /// Compare-and-sets won so far.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// Jobs read with `load_job` so far.
    pub fn loads(&self) -> usize {
        self.lock().loads
    }

    /// Compare-and-set commands sent so far: a `compare_and_set` is one, and so is a
    /// `compare_and_set_many` of any number of statements.
    pub fn commands(&self) -> usize {
        self.lock().commands
    }

    /// Archive calls so far: an `archive` is one, and so is an `archive_many` of any number of
    /// jobs.
    pub fn archive_calls(&self) -> usize {
        self.lock().archive_calls
    }

    /// Compare-and-sets lost so far.
    pub fn conflicts(&self) -> usize {
        self.lock().conflicts
    }

    /// Outbox marks written so far.
    pub fn marks(&self) -> usize {
        self.lock().marks
    }

    fn check(&self, op: Op) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut state = self.lock();
        match state.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(Some(error)) => Err(error),
            _ => Ok(state),
        }
    }

    fn find(
        &self,
        after: Option<&str>,
        limit: i64,
        keep: impl Fn(&Job) -> bool,
    ) -> Result<Found, StoreError> {
        let state = self.check(Op::Find)?;
        let mut found = Found::default();
        // None when `limit` is not positive, as the MongoDB store answers.
        let limit = usize::try_from(limit).unwrap_or(0);
        for (id, job) in state.jobs.iter() {
            if after.is_some_and(|after| id.as_str() <= after) || !keep(job) {
                continue;
            }
            if found.read == limit {
                break;
            }
            found.read += 1;
            found.last = Some(id.clone());
            found.jobs.push(job.clone());
        }
        Ok(found)
    }

    fn write(&self, before: &Job, after: &Job) -> Result<bool, StoreError> {
        let mut state = self.lock();
        state.commands += 1;
        write_one(&mut state, before, after)
    }

    /// The statements of a `compare_and_set_many`, each a compare-and-set of its own (a
    /// failure queued for `CompareAndSet` fails that statement only).
    fn write_many(
        &self,
        writes: &[(&Job, &Job)],
    ) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
        let mut state = self.check(Op::CompareAndSetMany)?;
        if !writes.is_empty() {
            state.commands += 1;
        }
        Ok(writes
            .iter()
            .map(|(before, after)| write_one(&mut state, before, after))
            .collect())
    }

    fn archive_now(&self, job: &Job) -> Result<(), StoreError> {
        let mut state = self.check(Op::Archive)?;
        state.archive_calls += 1;
        archive_one(&mut state, job);
        Ok(())
    }

    /// The jobs of an `archive_many`, each archived on its own (a failure queued for `Archive`
    /// fails that job only).
    fn archive_many_now(&self, jobs: &[&Job]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut state = self.check(Op::ArchiveMany)?;
        if !jobs.is_empty() {
            state.archive_calls += 1;
        }
        Ok(jobs
            .iter()
            .map(|job| {
                let queued = state.failures.get_mut(&Op::Archive);
                match queued.and_then(VecDeque::pop_front) {
                    Some(Some(error)) => Err(error),
                    _ => {
                        archive_one(&mut state, job);
                        Ok(())
                    }
                }
            })
            .collect())
    }
}

/// The MongoDB store's two steps (`store/archive.rs`) on `state`: the history write, then the
/// delete matched by id, run and version.
fn archive_one(state: &mut State, job: &Job) {
    let id = job.id.as_str().to_owned();
    let holds_run = state.jobs.get(&id).is_some_and(|s| s.run_id == job.run_id);
    match state.history.get_mut(&id) {
        None => {
            let record = HistoryRecord {
                job: job.clone(),
                previous_runs: Vec::new(),
            };
            state.history.insert(id.clone(), record);
        }
        Some(record)
            if record.job.run_id == job.run_id
                || record.previous_runs.iter().any(|r| r.run_id == job.run_id) => {}
        // Not on record and no longer active: another archiver moved it, and the record has
        // dropped it since as one of its oldest runs. Nothing to write.
        Some(_) if !holds_run => {}
        Some(record) => {
            let top = std::mem::replace(&mut record.job, job.clone());
            record.previous_runs.push(top);
            let extra = record.previous_runs.len().saturating_sub(MAX_PREVIOUS_RUNS);
            record.previous_runs.drain(..extra);
        }
    }
    if state
        .jobs
        .get(&id)
        .is_some_and(|s| s.run_id == job.run_id && s.version == job.version)
    {
        state.jobs.remove(&id);
    }
}

/// One compare-and-set on `state`: a failure queued for it, then any rival, then the check.
fn write_one(state: &mut State, before: &Job, after: &Job) -> Result<bool, StoreError> {
    let queued = state.failures.get_mut(&Op::CompareAndSet);
    if let Some(Some(error)) = queued.and_then(VecDeque::pop_front) {
        return Err(error);
    }
    let rival = state.rivals.pop_front().or_else(|| {
        let rivals = state.rivals_of.get_mut(before.id.as_str());
        rivals.and_then(VecDeque::pop_front)
    });
    let Some(stored) = state.jobs.get_mut(before.id.as_str()) else {
        return Ok(false);
    };
    if let Some(rival) = rival {
        rival(stored);
        stored.version += 1;
    }
    if stored.run_id != before.run_id || stored.version != before.version {
        state.conflicts += 1;
        return Ok(false);
    }
    *stored = keep_marks(stored, before, after);
    state.writes += 1;
    Ok(true)
}

/// `after`, keeping the outbox marks written to `stored` since `before` was read where the
/// write leaves them alone. The MongoDB store writes only the fields that differ between
/// `before` and `after`, down to the fields of one task (`store/update.rs`), so such a mark
/// survives unless the write replaces the stage in flight or its task list, changes the mark
/// itself, or issues a new attempt of the task (a new attempt's mark is always written).
fn keep_marks(stored: &Job, before: &Job, after: &Job) -> Job {
    let mut next = after.clone();
    let (Some(stored_stage), Some(before_stage), Some(next_stage)) = (
        stored.current_stage.as_ref(),
        before.current_stage.as_ref(),
        next.current_stage.as_mut(),
    ) else {
        return next;
    };
    if stored_stage.id != next_stage.id
        || before_stage.id != next_stage.id
        || before_stage.tasks.len() != next_stage.tasks.len()
    {
        return next;
    }
    let tasks = next_stage.tasks.iter_mut().zip(&before_stage.tasks);
    for ((task, before_task), stored_task) in tasks.zip(&stored_stage.tasks) {
        if before_task.task_id == task.task_id && before_task.dispatched == task.dispatched {
            task.dispatched = stored_task.dispatched;
        }
    }
    next
}

impl JobStore for MemoryStore {
    fn insert_job<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Inserted, StoreError>> {
        let result = self.check(Op::Insert).map(|mut state| {
            let id = job.id.as_str().to_owned();
            if state.jobs.contains_key(&id) {
                return Inserted::AlreadyExists;
            }
            state.jobs.insert(id, job.clone());
            Inserted::Created
        });
        async move { result }.boxed()
    }

    fn load_job<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, StoreError>> {
        let result = self.check(Op::Load).map(|mut state| {
            state.loads += 1;
            state.jobs.get(id.as_str()).cloned()
        });
        async move { result }.boxed()
    }

    fn compare_and_set<'a>(
        &'a self,
        before: &'a Job,
        after: &'a Job,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let _open = self.gate.read().await;
            self.write(before, after)
        }
        .boxed()
    }

    fn compare_and_set_many<'a>(
        &'a self,
        writes: &'a [(&'a Job, &'a Job)],
    ) -> BoxFuture<'a, Result<Vec<Result<bool, StoreError>>, StoreError>> {
        async move {
            let _open = self.gate.read().await;
            self.write_many(writes)
        }
        .boxed()
    }

    fn mark_dispatched<'a>(
        &'a self,
        marks: &'a [DispatchMark],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.check(Op::MarkDispatched).map(|mut state| {
            state.marks += marks.len();
            for mark in marks {
                let stage = state
                    .jobs
                    .get_mut(mark.job_id.as_str())
                    .filter(|s| s.run_id == mark.run_id)
                    .and_then(|s| s.current_stage.as_mut())
                    .filter(|s| s.id == mark.stage_id);
                for task in stage.into_iter().flat_map(|s| s.tasks.iter_mut()) {
                    if mark.task_ids.contains(&task.task_id) {
                        task.dispatched = Some(mark.at);
                    }
                }
            }
        });
        async move { result }.boxed()
    }

    fn archive<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.archive_now(job);
        async move { result }.boxed()
    }

    fn archive_many<'a>(
        &'a self,
        jobs: &'a [&'a Job],
    ) -> BoxFuture<'a, Result<Vec<Result<(), StoreError>>, StoreError>> {
        let result = self.archive_many_now(jobs);
        async move { result }.boxed()
    }

    fn job_stamp<'a>(
        &'a self,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<(String, i64)>, StoreError>> {
        let result = self.check(Op::Load).map(|state| {
            let job = state.jobs.get(id.as_str());
            job.map(|job| (job.run_id.clone(), job.version))
        });
        async move { result }.boxed()
    }

    fn latest_run<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, StoreError>> {
        let record = self
            .check(Op::History)
            .map(|state| state.history.get(id.as_str()).map(|r| r.job.clone()));
        async move { record }.boxed()
    }

    fn load_history<'a>(
        &'a self,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<HistoryRecord>, StoreError>> {
        let record = self
            .check(Op::History)
            .map(|state| state.history.get(id.as_str()).cloned());
        async move { record }.boxed()
    }

    fn ended_jobs<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Found, StoreError>> {
        let result = self.find(after, limit, |job| !job.status.is_active());
        async move { result }.boxed()
    }

    fn jobs_needing_attention<'a>(
        &'a self,
        now: Timestamp,
        cutoff: Timestamp,
        after: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Found, StoreError>> {
        let result = self.find(after, limit, |job| needs_attention(job, now, cutoff));
        async move { result }.boxed()
    }

    fn get_machine<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Machine>, StoreError>> {
        let machine = self
            .check(Op::Catalog)
            .map(|state| state.machines.get(id).cloned());
        async move { machine }.boxed()
    }

    fn get_pipeline<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pipeline>, StoreError>> {
        let pipeline = self
            .check(Op::Catalog)
            .map(|state| state.pipelines.get(id).cloned());
        async move { pipeline }.boxed()
    }

    /// As MongoDB measures it: the job's size as BSON.
    fn job_bytes(&self, job: &Job) -> Result<usize, StoreError> {
        mongodb::bson::to_vec(job)
            .map(|bytes| bytes.len())
            .map_err(|e| StoreError::Encode(e.to_string()))
    }

    fn server_time(
        &self,
    ) -> BoxFuture<'_, Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>> {
        async { Ok(Some(chrono::Utc::now())) }.boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = self.check(Op::Ping).map(|_| ());
        async move { result }.boxed()
    }
}

impl Catalog for MemoryStore {
    fn put_machine<'a>(&'a self, machine: &'a Machine) -> BoxFuture<'a, Result<(), StoreError>> {
        MemoryStore::put_machine(self, machine.clone());
        async { Ok(()) }.boxed()
    }

    fn put_pipeline<'a>(&'a self, pipeline: &'a Pipeline) -> BoxFuture<'a, Result<(), StoreError>> {
        MemoryStore::put_pipeline(self, pipeline.clone());
        async { Ok(()) }.boxed()
    }
}

/// The sweep's question, as the MongoDB store's query asks it.
fn needs_attention(job: &Job, now: Timestamp, cutoff: Timestamp) -> bool {
    match job.status {
        JobStatus::Pending => job.created < cutoff,
        JobStatus::Running | JobStatus::Paused | JobStatus::Held => {
            job.current_stage.iter().flat_map(|s| &s.tasks).any(|task| {
                task.status == TaskStatus::Pending
                    && (task.deadline < now || (task.dispatched.is_none() && task.issued < cutoff))
            })
        }
        _ => false,
    }
}
