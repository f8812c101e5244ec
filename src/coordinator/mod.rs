//! The coordinator: applies events to jobs with the pure engine, writes each change with a
//! compare-and-set, then carries out the effects (docs/consistency.md walks one result from
//! arrival to the next dispatch through these parts).
//!
//! - [`batch`]: coalescing the events of one job into one write;
//! - [`cache`]: the copies of jobs this process wrote last;
//! - [`write`]: the compare-and-set loop and the size policy;
//! - [`commit`]: compare-and-sets of many jobs sent in one round trip (group commit);
//! - [`effects`]: dispatch, notify and archive after a write;
//! - [`writers`]: outbox marks (group commit) and job events, written many at a time;
//! - [`observe`]: metrics and span fields;
//! - [`error`]: outcomes and errors.
//!
//! It reaches the store and the broker only through the ports ([`crate::ports`]), so every
//! part is unit-tested on the in-memory fakes (`src/fakes/`).

mod batch;
mod cache;
mod commit;
mod effects;
mod error;
mod observe;
mod write;
mod writers;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tracing::{debug, info, instrument, warn};

pub use batch::{BATCH_MAX_BYTES, BATCH_MAX_EVENTS};
pub use commit::{COMMIT_ALONE_BYTES, COMMIT_IN_FLIGHT, COMMIT_MAX_BYTES, COMMIT_MAX_WRITES};
pub use effects::Dispatched;
pub use error::{CoordinatorError, Created, Handled};
pub use write::MAX_CAS_ATTEMPTS;

pub use crate::domain::NewJob;

use self::batch::{Batches, Joined, Waiter};
use self::cache::{JobCache, JobCopy};
use crate::clock::Clock;
use crate::domain::rerun::{self, PipelineChoice, RerunRefused, RunPipeline};
use crate::domain::{Event, Job, JobId, StageId, Timestamp};
use crate::ports::{Broker, Inserted, JobStore, StoreError};

/// Joins the store, the broker and the engine. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    store: Arc<dyn JobStore>,
    broker: Arc<dyn Broker>,
    /// Per job with a batch in progress, the events waiting for its leader.
    batches: Arc<Batches>,
    /// Jobs as this process last wrote them.
    cache: Arc<JobCache>,
    /// The time replicas agree on, for every time written or judged.
    clock: Clock,
    /// Writes outbox marks and publishes job events off the critical path.
    writers: writers::Writers,
    /// Sends the compare-and-sets of many jobs in one round trip.
    committer: commit::Committer,
}

impl Coordinator {
    /// Must run on a tokio runtime: it starts the background writers.
    pub fn new(store: Arc<dyn JobStore>, broker: Arc<dyn Broker>) -> Self {
        let cache = Arc::new(JobCache::default());
        let needed: writers::StillNeeded = {
            let cache = cache.clone();
            Arc::new(move |mark| cache.needs_mark(mark))
        };
        Self {
            writers: writers::Writers::start(store.clone(), broker.clone(), needed),
            committer: commit::Committer::start(store.clone()),
            store,
            broker,
            batches: Arc::default(),
            cache,
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

    /// Returns once the outbox marks and job events of every event handled before were
    /// written (or failed): for shutdown, and for tests that look at them.
    pub async fn flush(&self) {
        self.writers.flush().await;
    }

    /// Whether a session with the broker is open now.
    pub fn broker_connected(&self) -> bool {
        self.broker.is_connected()
    }

    /// Measures this process's clock against the database server's, so [`Coordinator::now`]
    /// agrees with the other replicas'. Without the server's time the offset stays as it was.
    pub async fn sync_clock(&self) -> Result<(), StoreError> {
        let sent = self.clock.local();
        let server = self.store.server_time().await?;
        let received = self.clock.local();
        match server {
            Some(server) if !self.clock.observe(sent, server, received) => {
                debug!("slow reading of the database's clock dropped; keeping the last offset");
            }
            Some(_) => {}
            None => debug!("the database server does not report its time; using the local clock"),
        }
        Ok(())
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
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let current = RunPipeline {
            id: pipeline.id,
            stages: pipeline.stages,
            configs: machine.configs,
        };
        let job = match &request.from_stage {
            None => Job::new(
                &request.machine_id,
                &request.hash,
                &request.file_name,
                &current.id,
                current.stages,
                current.configs,
                run_id,
                self.clock.now(),
            ),
            Some(from) => match self.plan_rerun(&request, from, current, run_id).await? {
                Ok(job) => job,
                Err(created) => return Ok(created),
            },
        };
        let id = job.id.clone();
        if self.store.insert_job(&job).await? == Inserted::AlreadyExists {
            return Ok(Created::AlreadyActive(id));
        }
        // The start begins from the job as inserted instead of reading it back: one round trip
        // less for every job (the compare-and-set still checks the copy).
        self.cache.put(JobCopy::new(Arc::new(job)));
        info!(job_id = %id, "job created");
        // The job is durable now; if starting fails, the sweep starts it later.
        if let Err(error) = self.handle(&id, Event::Start).await {
            warn!(job_id = %id, %error, "job created but not started yet; the sweep will retry");
        }
        Ok(Created::Started(id))
    }

    /// The rerun `request` asks for, from stage `from` of the latest ended run; or what to
    /// answer instead: the job is active, or the rerun cannot start.
    async fn plan_rerun(
        &self,
        request: &NewJob,
        from: &StageId,
        current: RunPipeline,
        run_id: String,
    ) -> Result<Result<Job, Created>, CoordinatorError> {
        let id = JobId::derive(&request.machine_id, &request.hash);
        // Cheap reads: whether a run is in `jobs`, then the latest ended run alone.
        if self.store.job_stamp(&id).await?.is_some() {
            return Ok(Err(Created::AlreadyActive(id)));
        }
        let Some(earlier) = self.store.latest_run(&id).await? else {
            let message = format!("job '{id}' has no earlier run to rerun from a stage");
            let refused = RerunRefused {
                path: "$.from_stage",
                message,
            };
            return Ok(Err(Created::CannotRerun(refused)));
        };
        let pipeline = match request.pipeline {
            PipelineChoice::Snapshot => RunPipeline::of(&earlier),
            PipelineChoice::Current => current,
        };
        let now = self.clock.now();
        let planned = rerun::plan(&earlier, request, from, pipeline, run_id, now);
        Ok(planned.map_err(Created::CannotRerun))
    }

    /// Applies `event` to the job with `id`, retrying lost compare-and-set races.
    ///
    /// Events for the same job that arrive while one is being written are coalesced (see
    /// [`batch`]): the first caller applies them all in one write and hands each caller its
    /// own outcome. This turns the results of a stage's tasks from rivals that make each other
    /// retry into one write.
    #[instrument(skip_all, fields(job_id = %id, task_id = tracing::field::Empty, stage_id = tracing::field::Empty))]
    pub async fn handle(&self, id: &JobId, event: Event) -> Result<Handled, CoordinatorError> {
        observe::note_task(&event);
        loop {
            let leader = match self.batches.join(id, &event) {
                Joined::Leader(leader) => leader,
                Joined::Follower(receiver) => match receiver.await {
                    Ok(outcome) => return outcome,
                    // The leader stopped before this event's turn: handle it again.
                    Err(_) => continue,
                },
            };
            // On an error the leader drops, handing the waiters back; each retries on its own.
            let known = self.cache.take(id);
            let mut written = self
                .apply_batch(id, std::slice::from_ref(&event), known, true)
                .await?;
            let mine = written.outcomes.remove(0);
            let mut last = written.next;
            while let Some(batch) = leader.next_batch() {
                last = self.apply_waiters(id, batch, last).await;
            }
            if let Some(copy) = last {
                self.cache.put(copy);
            }
            return Ok(mine);
        }
    }

    /// Applies the events that waited for the leader in one write and replies to each;
    /// returns the job to start the next batch from.
    async fn apply_waiters(
        &self,
        id: &JobId,
        batch: Vec<Waiter>,
        known: Option<JobCopy>,
    ) -> Option<JobCopy> {
        let (events, replies): (Vec<Event>, Vec<_>) =
            batch.into_iter().map(|w| (w.event, w.reply)).unzip();
        match self.apply_batch(id, &events, known, false).await {
            Ok(written) => {
                for (reply, outcome) in replies.into_iter().zip(written.outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                written.next
            }
            // One event the store refuses must not fail the others: apply them one by one.
            Err(error) if !error.is_transient() && events.len() > 1 => {
                for (event, reply) in events.iter().zip(replies) {
                    let alone = self
                        .apply_batch(id, std::slice::from_ref(event), None, false)
                        .await;
                    let _ = reply.send(alone.map(|mut w| w.outcomes.remove(0)));
                }
                None
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                None
            }
        }
    }
}
