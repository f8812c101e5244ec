//! The shell: loads a job, applies an event with the pure engine, writes the result with a
//! compare-and-set, then carries out the effects (dispatch, notify, archive).
//!
//! Longer than the ~400 lines we aim for: it still holds coalescing, the job-copy cache, the
//! write loop, the effects and their metrics together; splitting it into those parts, each
//! with unit tests on in-memory fakes, is issue 11's first step (docs/consistency.md describes
//! the flow through it).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, field, info, instrument, warn};

use crate::amqp::publisher::{Outgoing, PublishError};
use crate::amqp::{Link, Names, topology};
use crate::clock::Clock;
use crate::domain::TaskResult;
use crate::domain::size::json_size;
use crate::domain::{
    Effect, Event, Ignored, Job, JobId, Notice, StageId, TaskId, Timestamp, apply_in_place,
};
use crate::messages::{DISPATCH_TYPE, EVENT_TYPE, JobEvent, StageDispatch, WorkerRef};
use crate::meter;
use crate::store::{Inserted, Store, StoreError};

/// How many recently written jobs a process keeps to start the next event from.
const RECENT_JOBS: usize = 1024;

/// Jobs whose stage in flight has more tasks than this are not kept in [`Recent`]: they are
/// large (so 1,024 kept copies stay within tens of MiB), and their results already come in
/// batches of one read each.
const RECENT_MAX_TASKS: usize = 64;

/// Dispatches of one stage published (and confirmed) together.
const DISPATCH_CHUNK: usize = 1000;

/// How often a lost compare-and-set is retried before giving up.
pub const MAX_CAS_ATTEMPTS: u32 = 32;

/// Most events of one job applied in one write.
const BATCH_MAX_EVENTS: usize = 256;

/// Most bytes of results (outputs, logs and errors, as JSON) applied in one write; the events
/// past it wait for the next write, so a batch's size is known before it is applied.
pub const BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Why the shell could not finish handling an event. [`CoordinatorError::is_transient`] tells
/// whether a retry may help; the consumer and the sweep decide on it.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    #[error("gave up after {0} lost compare-and-set races")]
    Contention(u32),
    /// The batch this event was coalesced into failed; the text says why.
    #[error("{message}")]
    Batch { message: String, transient: bool },
}

impl CoordinatorError {
    /// Whether a retry may succeed: the store or the broker was unavailable, or other writers
    /// won the race. A permanent error (a value the store cannot encode or refuses, a message
    /// that cannot be encoded) fails the same way on every retry.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(error) => error.is_transient(),
            Self::Publish(error) => !matches!(error, PublishError::Encode(_)),
            Self::Contention(_) => true,
            Self::Batch { transient, .. } => *transient,
        }
    }
}

/// What handling an event came to.
#[derive(Debug)]
pub enum Handled {
    /// The job changed and the effects were carried out; `dispatched` tells whether they
    /// included publishing tasks.
    Applied {
        job: Arc<Job>,
        /// When the broker confirmed the tasks this event caused to be published, if any.
        dispatched: Option<Instant>,
    },
    /// Nothing changed.
    Ignored(Ignored),
    /// No active job has this id.
    UnknownJob,
}

pub use crate::domain::NewJob;

/// What starting a job came to.
#[derive(Debug)]
pub enum Created {
    Started(JobId),
    AlreadyActive(JobId),
    UnknownMachine,
    UnknownPipeline(String),
}

/// Joins the store, the publisher and the engine. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    store: Store,
    link: Link,
    names: Names,
    /// Worker queues this process has declared; std mutex, never held across `.await`.
    declared: Arc<Mutex<HashSet<String>>>,
    /// Per job with a batch in progress: the leader's token and the events waiting for it
    /// (see [`Coordinator::handle`]).
    waiting: Arc<Batches>,
    leaders: Arc<std::sync::atomic::AtomicU64>,
    /// Jobs as this process last wrote them (see [`Recent`]).
    recent: Arc<Mutex<Recent>>,
    /// The time replicas agree on, for every time written or judged.
    clock: Clock,
}

/// The jobs this process wrote last, so the next event for one of them can start from it
/// instead of reading it again. A copy can be behind the store (another replica wrote since);
/// the compare-and-set then fails and the job is read afresh, so a copy only ever saves a read.
#[derive(Default)]
struct Recent {
    jobs: HashMap<JobId, Arc<Job>>,
}

impl Recent {
    /// Whether a copy of `job` is worth keeping: only small jobs are.
    fn keeps(job: &Job) -> bool {
        job.current_stage
            .as_ref()
            .is_none_or(|s| s.tasks.len() <= RECENT_MAX_TASKS)
    }

    fn take(&mut self, id: &JobId) -> Option<Arc<Job>> {
        self.jobs.remove(id)
    }

    /// Keeps `job` if it is small; when full, an arbitrary other copy makes room.
    fn put(&mut self, job: Arc<Job>) {
        if !Self::keeps(&job) {
            return;
        }
        if self.jobs.len() >= RECENT_JOBS
            && !self.jobs.contains_key(&job.id)
            && let Some(other) = self.jobs.keys().next().cloned()
        {
            self.jobs.remove(&other);
        }
        self.jobs.insert(job.id.clone(), job);
    }
}

/// `job` with the outbox marks a dispatch wrote to the store since it was written.
fn with_marks(mut job: Job, marks: &[Mark]) -> Job {
    for (stage_id, task_ids, at) in marks {
        let Some(stage) = job.current_stage.as_mut().filter(|s| &s.id == stage_id) else {
            continue;
        };
        for task in stage
            .tasks
            .iter_mut()
            .filter(|t| task_ids.contains(&t.task_id))
        {
            task.dispatched = Some(*at);
        }
    }
    job
}

/// Outbox marks written by a dispatch: the stage, its tasks and the time written.
type Mark = (StageId, Vec<TaskId>, Timestamp);

/// An event coalesced into another caller's batch, and where its outcome goes.
type Waiter = (Event, oneshot::Sender<Result<Handled, CoordinatorError>>);

/// Per job with a batch in progress: the leader's token and the events waiting for it.
type Batches = Mutex<HashMap<JobId, (u64, Vec<Waiter>)>>;

/// Removes the job's batch entry when its leader stops, even if the leader's future is
/// dropped, so waiters are never stranded: their senders drop and they handle their events on
/// their own. Only the entry of this leader is removed, never a later leader's.
struct LeaderGuard<'a> {
    waiting: &'a Batches,
    id: &'a JobId,
    token: u64,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.waiting.lock()
            && map
                .get(self.id)
                .is_some_and(|(token, _)| *token == self.token)
        {
            map.remove(self.id);
        }
    }
}

/// Takes the first waiting events, up to [`BATCH_MAX_EVENTS`] and [`BATCH_MAX_BYTES`] (at
/// least one, whatever its size: a single result is bounded by the message size limit).
fn take_batch(queue: &mut Vec<Waiter>) -> Vec<Waiter> {
    let mut bytes = 0usize;
    let mut taken = 0;
    for (event, _) in queue.iter() {
        let size = event_bytes(event);
        if taken > 0 && (taken >= BATCH_MAX_EVENTS || bytes + size > BATCH_MAX_BYTES) {
            break;
        }
        bytes += size;
        taken += 1;
    }
    queue.drain(..taken).collect()
}

/// About how many bytes an event brings into the job.
fn event_bytes(event: &Event) -> usize {
    match event {
        Event::Result(result) => {
            let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
            result.outputs.iter().map(json_size).sum::<usize>()
                + text(&result.log)
                + text(&result.error)
                + 64
        }
        Event::Fail { reason } => reason.len() + 64,
        Event::Start | Event::Abort | Event::Timeout { .. } => 64,
    }
}

/// Re-creates an error for each event of a failed batch, keeping its retry decision.
fn share(error: &CoordinatorError) -> CoordinatorError {
    match error {
        CoordinatorError::Contention(n) => CoordinatorError::Contention(*n),
        other => CoordinatorError::Batch {
            message: other.to_string(),
            transient: other.is_transient(),
        },
    }
}

impl Coordinator {
    pub fn new(store: Store, link: Link, names: Names) -> Self {
        Self {
            store,
            link,
            names,
            declared: Arc::new(Mutex::new(HashSet::new())),
            waiting: Arc::new(Mutex::new(HashMap::new())),
            leaders: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            recent: Arc::new(Mutex::new(Recent::default())),
            clock: Clock::default(),
        }
    }

    /// The same coordinator reading local time from `clock` (a test can set a clock that is
    /// off, as a replica's may be).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time replicas agree on (see [`crate::clock`]).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Measures this process's clock against the database server's, so [`Coordinator::now`]
    /// agrees with the other replicas'. Without the server's time the offset stays as it was.
    pub async fn sync_clock(&self) -> Result<(), StoreError> {
        let sent = self.clock.local();
        let server = self.store.server_time().await?;
        let received = self.clock.local();
        match server {
            Some(server) => {
                if !self.clock.observe(sent, server, received) {
                    debug!("slow reading of the database's clock dropped; keeping the last offset");
                }
            }
            None => debug!("the database server does not report its time; using the local clock"),
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Forgets which worker queues were declared, so the next dispatch declares them again
    /// (after a reconnect the broker may have lost non-durable state).
    pub fn forget_declared_queues(&self) {
        if let Ok(mut set) = self.declared.lock() {
            set.clear();
        }
    }

    async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), PublishError> {
        let session = self.link.current().ok_or(PublishError::NotConnected)?;
        session.publisher.publish_all(messages).await
    }

    /// Records a new job and dispatches its first stage.
    #[instrument(skip_all, fields(machine_id = %request.machine_id))]
    pub async fn create_job(&self, request: NewJob) -> Result<Created, CoordinatorError> {
        let Some(machine) = self.store.get_machine(&request.machine_id).await? else {
            return Ok(Created::UnknownMachine);
        };
        let Some(pipeline) = self.store.get_pipeline(&machine.pipeline_id).await? else {
            return Ok(Created::UnknownPipeline(machine.pipeline_id));
        };
        let job = Job::new(
            &request.machine_id,
            &request.hash,
            &request.file_name,
            &pipeline.id,
            pipeline.stages,
            machine.configs,
            uuid::Uuid::new_v4().simple().to_string(),
            self.clock.now(),
        );
        let id = job.id.clone();
        if self.store.insert_job(&job).await? == Inserted::AlreadyExists {
            return Ok(Created::AlreadyActive(id));
        }
        info!(job_id = %id, "job created");
        // The job is durable now; if starting fails, the sweep starts it later.
        if let Err(error) = self.handle(&id, Event::Start).await {
            warn!(job_id = %id, %error, "job created but not started yet; the sweep will retry");
        }
        Ok(Created::Started(id))
    }

    /// Applies `event` to the job with `id`, retrying lost compare-and-set races.
    ///
    /// Events for the same job that arrive while one is being written are coalesced: the first
    /// caller (the leader) applies them all, in arrival order, in one compare-and-set, and hands
    /// each caller its own outcome. This turns the results of a stage's tasks from rivals that
    /// make each other retry into one write.
    #[instrument(skip_all, fields(job_id = %id, task_id = field::Empty, stage_id = field::Empty))]
    pub async fn handle(&self, id: &JobId, event: Event) -> Result<Handled, CoordinatorError> {
        let span = tracing::Span::current();
        if let Event::Result(TaskResult { task_id, .. }) | Event::Timeout { task_id } = &event {
            span.record("task_id", field::display(task_id));
        }
        let token = self
            .leaders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let follower = {
            let mut map = self.waiting.lock().map_err(|_| CoordinatorError::Batch {
                message: "batch map poisoned".into(),
                transient: false,
            })?;
            match map.get_mut(id) {
                Some((_, queue)) => {
                    let (sender, receiver) = oneshot::channel();
                    queue.push((event.clone(), sender));
                    Some(receiver)
                }
                None => {
                    map.insert(id.clone(), (token, Vec::new()));
                    None
                }
            }
        };
        if let Some(receiver) = follower {
            return match receiver.await {
                Ok(outcome) => outcome,
                // The leader stopped before this event's turn: handle it alone.
                Err(_) => Box::pin(self.handle(id, event)).await,
            };
        }
        let _guard = LeaderGuard {
            waiting: &self.waiting,
            id,
            token,
        };
        // On an error the guard hands the waiters back; each then retries on its own.
        let known = self.recent.lock().ok().and_then(|mut r| r.take(id));
        let (mut outcomes, mut last) = self
            .apply_batch(id, std::slice::from_ref(&event), known)
            .await?;
        let mine = outcomes.remove(0);
        loop {
            let batch: Vec<Waiter> = match self.waiting.lock() {
                Ok(mut map) => match map.get_mut(id) {
                    Some((_, queue)) if !queue.is_empty() => take_batch(queue),
                    _ => {
                        map.remove(id);
                        break;
                    }
                },
                Err(_) => break,
            };
            let (events, senders): (Vec<Event>, Vec<_>) = batch.into_iter().unzip();
            match self.apply_batch(id, &events, last.take()).await {
                Ok((outcomes, written)) => {
                    last = written;
                    for (sender, outcome) in senders.into_iter().zip(outcomes) {
                        let _ = sender.send(Ok(outcome));
                    }
                }
                // One event the store refuses must not fail the others: apply them one by one.
                Err(error) if !error.is_transient() && events.len() > 1 => {
                    for (event, sender) in events.iter().zip(senders) {
                        let alone = self
                            .apply_batch(id, std::slice::from_ref(event), None)
                            .await;
                        let _ = sender.send(alone.map(|(mut outcomes, _)| outcomes.remove(0)));
                    }
                }
                Err(error) => {
                    for sender in senders {
                        let _ = sender.send(Err(share(&error)));
                    }
                }
            }
        }
        if let Some(job) = last
            && let Ok(mut recent) = self.recent.lock()
        {
            recent.put(job);
        }
        Ok(mine)
    }

    /// Applies `events` in order to the job in one compare-and-set; one outcome per event, and
    /// the job as written, if a write happened.
    ///
    /// `known` is the job as this process last wrote it, if it did: the first attempt starts
    /// from it instead of reading the job again (a wide stage's job is megabytes). If another
    /// writer got in between, the compare-and-set fails and the next attempt reads afresh.
    async fn apply_batch(
        &self,
        id: &JobId,
        events: &[Event],
        mut known: Option<Arc<Job>>,
    ) -> Result<(Vec<Handled>, Option<Arc<Job>>), CoordinatorError> {
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let cached = known.is_some();
            let before = match known.take() {
                Some(job) => Arc::unwrap_or_clone(job),
                None => match self.store.load_job(id).await? {
                    Some(job) => job,
                    None => {
                        let unknown = events.iter().map(|_| Handled::UnknownJob).collect();
                        return Ok((unknown, None));
                    }
                },
            };
            if let Some(stage) = &before.current_stage {
                tracing::Span::current().record("stage_id", field::display(&stage.id));
            }
            let now = self.clock.now();
            // One copy per attempt, changed in place by every event: a wide stage's job is
            // large, and a copy per event made a batch quadratic in it.
            let mut job = before.clone();
            let mut steps: Vec<Step> = Vec::new();
            let mut outcomes: Vec<Option<Handled>> = Vec::with_capacity(events.len());
            for (index, event) in events.iter().enumerate() {
                let worker = event_worker(&job, event);
                let stage_before = job.current_stage.as_ref().map(|s| s.id.clone());
                match apply_in_place(&mut job, event, now) {
                    Err(reason) => outcomes.push(Some(Handled::Ignored(reason))),
                    Ok(effects) => {
                        let stage_after = job.current_stage.as_ref().map(|s| &s.id);
                        let retried = !matches!(event, Event::Start)
                            && stage_after == stage_before.as_ref()
                            && effects.iter().any(|e| matches!(e, Effect::Dispatch { .. }));
                        steps.push(Step {
                            index,
                            worker,
                            retried,
                            effects,
                        });
                        outcomes.push(None);
                    }
                }
            }
            // A copy may be behind the store, so it can vouch for a change (the compare-and-set
            // checks it) but not for ignoring an event: read the job and decide again.
            if cached && steps.len() < events.len() {
                continue;
            }
            if steps.is_empty() {
                // Nothing to write; the starting point is still good for the next batch.
                let unchanged = Some(Arc::new(before));
                return Ok((outcomes.into_iter().flatten().collect(), unchanged));
            }
            // One write for the whole batch, of only what changed.
            job.version = before.version + 1;
            let mut failure = None;
            let bytes = crate::store::job_bytes(&job)?;
            if bytes > crate::store::MAX_JOB_BYTES {
                // The database would refuse the document, now and on every retry: fail the
                // job from where it was instead of leaving it stuck.
                let reason = format!(
                    "the job's record would take {:.1} MiB, more than the {} MiB a job may take in the database",
                    bytes as f64 / 1024.0 / 1024.0,
                    crate::store::MAX_JOB_BYTES / 1024 / 1024
                );
                warn!(job_id = %id, bytes, events = events.len(), "{reason}; failing the job");
                let event = Event::Fail { reason };
                job = before.clone();
                let effects = apply_in_place(&mut job, &event, now).unwrap_or_default();
                job.version = before.version + 1;
                steps = vec![Step {
                    index: 0,
                    worker: String::new(),
                    retried: false,
                    effects,
                }];
                failure = Some(event);
            }
            if self.store.compare_and_set(&before, &job).await? {
                drop(before);
                meter::job_written(steps.len());
                // One shared copy of the written job for every outcome of the batch.
                let written = Arc::new(job);
                let mut all_effects = Vec::new();
                let mut dispatching = Vec::new();
                for step in steps {
                    observe(
                        &step,
                        failure.as_ref().unwrap_or(&events[step.index]),
                        &written,
                    );
                    if step
                        .effects
                        .iter()
                        .any(|e| matches!(e, Effect::Dispatch { .. }))
                    {
                        dispatching.push(step.index);
                    }
                    all_effects.extend(step.effects);
                }
                let (confirmed, marks) = self.execute(&written, all_effects).await?;
                // Events the failure swallowed were taken into account too: the job ended.
                let outcomes = outcomes
                    .into_iter()
                    .enumerate()
                    .map(|(index, outcome)| {
                        outcome.unwrap_or_else(|| Handled::Applied {
                            job: written.clone(),
                            dispatched: confirmed.filter(|_| dispatching.contains(&index)),
                        })
                    })
                    .collect();
                // The next batch may start from this copy, with the outbox marks the store got
                // since the write; a wide stage's copy is not worth the clone: read afresh.
                let next = if !written.status.is_active() {
                    None
                } else if marks.is_empty() {
                    Some(written)
                } else if Recent::keeps(&written) {
                    Some(Arc::new(with_marks(Arc::unwrap_or_clone(written), &marks)))
                } else {
                    None
                };
                return Ok((outcomes, next));
            }
            if cached {
                // The copy was behind the store: not a race, just read the job.
                continue;
            }
            meter::cas_conflict();
            debug!(
                attempt,
                events = events.len(),
                "lost a compare-and-set race; reloading"
            );
            // Spread out competing writers a little.
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
            tokio::time::sleep(Duration::from_millis(
                u64::from(attempt.min(5)) * 2 + jitter,
            ))
            .await;
        }
        Err(CoordinatorError::Contention(MAX_CAS_ATTEMPTS))
    }

    /// Carries out `effects`, dispatches first (they are what the workers wait for; the
    /// engine's order holds among the rest). Returns when the first dispatch was confirmed, and
    /// the outbox marks written.
    async fn execute(
        &self,
        job: &Job,
        effects: Vec<Effect>,
    ) -> Result<(Option<Instant>, Vec<Mark>), CoordinatorError> {
        let (dispatches, rest): (Vec<Effect>, Vec<Effect>) = effects
            .into_iter()
            .partition(|e| matches!(e, Effect::Dispatch { .. }));
        let mut confirmed = None;
        let mut marks = Vec::new();
        for effect in dispatches.into_iter().chain(rest) {
            match effect {
                Effect::Dispatch { stage_id, task_ids } => {
                    if let Some((at, marked)) = self.dispatch(job, &stage_id, &task_ids).await? {
                        confirmed = confirmed.or(Some(at));
                        marks.push((stage_id, task_ids, marked));
                    }
                }
                Effect::Notify(notice) => self.notify(job, notice).await,
                Effect::Archive => {
                    self.store.archive(job).await?;
                    info!(job_id = %job.id, status = job.status.as_str(), "job archived");
                }
            }
        }
        Ok((confirmed, marks))
    }

    /// Publishes the current attempt of `task_ids` and marks them dispatched. Returns, if
    /// anything was published, when the broker confirmed it and the time written as the mark.
    pub async fn dispatch(
        &self,
        job: &Job,
        stage_id: &StageId,
        task_ids: &[TaskId],
    ) -> Result<Option<(Instant, Timestamp)>, CoordinatorError> {
        let Some(stage) = job.current_stage.as_ref().filter(|s| &s.id == stage_id) else {
            return Ok(None);
        };
        let Some(spec) = stage_id.index().and_then(|i| job.pipeline.get(i)) else {
            return Ok(None);
        };
        self.ensure_worker_queue(&spec.worker.id).await?;
        let worker = WorkerRef {
            id: spec.worker.id.clone(),
            name: spec.worker.name.clone(),
        };
        // Hoisted out of the loop: a wide stage publishes thousands of these.
        let wanted: HashSet<&TaskId> = task_ids.iter().collect();
        let exchange = self.names.dispatch_exchange();
        let reply_to: lapin::types::ShortString = self.names.results_queue().into();
        let tasks: Vec<_> = stage
            .tasks
            .iter()
            .filter(|t| wanted.contains(&t.task_id))
            .collect();
        let count = tasks.len();
        // In chunks, so a wide stage does not hold every encoded message at once.
        for chunk in tasks.chunks(DISPATCH_CHUNK) {
            let mut messages = Vec::with_capacity(chunk.len());
            for task in chunk {
                let dispatch = StageDispatch {
                    task_id: task.task_id.clone(),
                    job_id: job.id.clone(),
                    run_id: job.run_id.clone(),
                    machine_id: job.machine_id.clone(),
                    pipeline_id: job.pipeline_id.clone(),
                    stage_id: stage_id.clone(),
                    worker: worker.clone(),
                    inputs: task.inputs.clone(),
                    configs: task.configs.clone(),
                    attempt: task.attempt,
                    deadline: task.deadline,
                };
                let mut message = Outgoing::json(
                    exchange.clone(),
                    spec.worker.id.clone(),
                    DISPATCH_TYPE,
                    &dispatch,
                )
                .map_err(PublishError::from)?;
                message.properties = message
                    .properties
                    .with_message_id(task.task_id.as_str().into())
                    .with_correlation_id(task.task_id.as_str().into())
                    .with_reply_to(reply_to.clone());
                messages.push(message);
            }
            self.publish_all(messages).await?;
        }
        let confirmed = Instant::now();
        meter::tasks_dispatched(&spec.worker.id, count);
        let marked = self.clock.now();
        self.store
            .mark_dispatched(job, stage_id, task_ids, marked)
            .await?;
        // A copy kept for the next event would lack this mark: drop it (a batch that
        // dispatched keeps a marked copy of its own).
        if let Ok(mut recent) = self.recent.lock() {
            recent.take(&job.id);
        }
        debug!(job_id = %job.id, stage_id = %stage_id, tasks = count, "tasks dispatched");
        Ok(Some((confirmed, marked)))
    }

    async fn ensure_worker_queue(&self, worker_id: &str) -> Result<(), CoordinatorError> {
        let known = self
            .declared
            .lock()
            .map(|set| set.contains(worker_id))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        // A channel of its own: a declare the broker refuses closes the channel it ran on.
        let session = self.link.current().ok_or(PublishError::NotConnected)?;
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(PublishError::from)?;
        let declared = topology::declare_worker_queue(&channel, &self.names, worker_id).await;
        if channel.status().connected() {
            let _ = channel.close(200, "declared".into()).await;
        }
        declared.map_err(PublishError::from)?;
        if let Ok(mut set) = self.declared.lock() {
            set.insert(worker_id.to_owned());
        }
        Ok(())
    }

    /// Publishes a notice on the events exchange. Best effort: the job change is already durable,
    /// and a lost event must not undo it, so a failure is logged and not returned.
    async fn notify(&self, job: &Job, notice: Notice) {
        let (routing_key, stage_id) = match &notice {
            Notice::Job(status) => (format!("job.{}", status.as_str()), None),
            Notice::StageCompleted(stage) => ("stage.completed".to_owned(), Some(stage.clone())),
        };
        let event = JobEvent {
            job_id: job.id.clone(),
            run_id: job.run_id.clone(),
            status: job.status,
            stage_id,
            at: self.clock.now(),
        };
        let message = match Outgoing::json(
            self.names.events_exchange(),
            routing_key,
            EVENT_TYPE,
            &event,
        ) {
            Ok(message) => message,
            Err(error) => {
                warn!(job_id = %job.id, %error, "cannot encode job event");
                return;
            }
        };
        if let Err(error) = self.publish_all(vec![message]).await {
            warn!(job_id = %job.id, %error, "job event not published");
        }
    }
}

/// One applied event of a batch, with what its metrics need from before it was applied.
struct Step {
    index: usize,
    /// The worker of the task the event is about (empty for job-level events).
    worker: String,
    /// The event put a failed or overdue task up for another attempt.
    retried: bool,
    effects: Vec<Effect>,
}

/// The worker of the task `event` is about, in `job` before the event.
fn event_worker(job: &Job, event: &Event) -> String {
    match event {
        Event::Result(TaskResult { task_id, .. }) | Event::Timeout { task_id } => {
            worker_of(job, task_id)
        }
        Event::Start | Event::Abort | Event::Fail { .. } => String::new(),
    }
}

/// The worker of the stage holding `task_id` in `job`.
fn worker_of(job: &Job, task_id: &TaskId) -> String {
    job.stages
        .iter()
        .chain(job.current_stage.iter())
        .find(|s| s.tasks.iter().any(|t| t.issued_as(task_id)))
        .and_then(|s| s.worker_id.clone())
        .unwrap_or_default()
}

/// Records the metrics of one applied event; `after` is the job as written.
fn observe(step: &Step, event: &Event, after: &Job) {
    let worker = step.worker.as_str();
    match event {
        Event::Start => meter::job_started(),
        Event::Result(result) => {
            if result.error.is_none() {
                meter::task_completed(worker);
            } else if step.retried {
                meter::task_retried(worker);
            }
        }
        Event::Timeout { .. } => {
            meter::task_timed_out(worker);
            if step.retried {
                meter::task_retried(worker);
            }
        }
        Event::Abort | Event::Fail { .. } => {}
    }
    for effect in &step.effects {
        match effect {
            Effect::Notify(Notice::Job(status)) if !status.is_active() => {
                meter::job_ended(status.as_str())
            }
            Effect::Notify(Notice::StageCompleted(stage_id)) => {
                if let Some(stage) = after.stages.iter().find(|s| &s.id == stage_id)
                    && let (Some(started), Some(completed)) = (stage.started, stage.completed)
                {
                    let duration = (completed.as_datetime() - started.as_datetime())
                        .to_std()
                        .unwrap_or_default();
                    meter::stage_duration(stage.worker_id.as_deref().unwrap_or(""), duration);
                }
            }
            _ => {}
        }
    }
}
