//! Effects: what a written job change asks for, carried out after the write — dispatches
//! (published and confirmed here, then marked in the job's outbox by the mark writer), job
//! events (handed to the event publisher), and the move to history (docs/consistency.md, "The
//! outbox").

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use super::Coordinator;
use super::cache::Mark;
use super::error::CoordinatorError;
use crate::domain::{Effect, Job, Notice, StageId, TaskId, TaskRecord, Timestamp};
use crate::messages::{
    CLEANUP_PART_BYTES, JobCleanup, JobEvent, StageDispatch, WorkerRef, cleanup_parts,
};
use crate::meter;
use crate::ports::{Announced, DispatchMark, EventBody};

/// Dispatches of one stage published (and confirmed) together.
const DISPATCH_CHUNK: usize = 1000;

/// What carrying out a batch's effects came to.
#[derive(Debug, Default)]
pub struct Done {
    /// When the broker confirmed the first dispatch, if any was published.
    pub confirmed: Option<Instant>,
    /// The outbox marks written.
    pub marks: Vec<Mark>,
}

/// A dispatch that was published and marked.
#[derive(Debug, Clone, Copy)]
pub struct Dispatched {
    /// When the broker confirmed it.
    pub confirmed: Instant,
    /// The time written as the outbox mark.
    pub marked: Timestamp,
}

/// The tasks of one dispatch and the worker they go to.
struct ToDispatch<'a> {
    worker: WorkerRef,
    tasks: Vec<&'a TaskRecord>,
}

/// `task_ids` among the tasks of `job`'s stage in flight `stage_id`, with their worker; `None`
/// when the stage is no longer in flight.
fn to_dispatch<'a>(
    job: &'a Job,
    stage_id: &StageId,
    task_ids: &[TaskId],
) -> Option<ToDispatch<'a>> {
    let stage = job.current_stage.as_ref().filter(|s| &s.id == stage_id)?;
    let spec = stage_id.index().and_then(|i| job.pipeline.get(i))?;
    let worker = WorkerRef {
        id: spec.worker.id.clone(),
        name: spec.worker.name.clone(),
    };
    // Hoisted out of the loop: a wide stage publishes thousands of these.
    let wanted: HashSet<&TaskId> = task_ids.iter().collect();
    let tasks = stage.tasks.iter().filter(|t| wanted.contains(&t.task_id));
    Some(ToDispatch {
        worker,
        tasks: tasks.collect(),
    })
}

/// The stage-dispatch message of the current attempt of `task`.
fn message(job: &Job, stage_id: &StageId, worker: &WorkerRef, task: &TaskRecord) -> StageDispatch {
    StageDispatch {
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
    }
}

/// When a dispatch's outbox mark is written.
#[derive(Debug, Clone, Copy)]
enum MarkWhen {
    /// Before the dispatch returns.
    Now,
    /// After [`writers::MARK_DELAY`](super::writers::MARK_DELAY), if its tasks have not
    /// answered by then.
    Later,
}

impl Coordinator {
    /// Carries out `effects` of the written `job` (of `bytes` as stored), dispatches first
    /// (they are what the workers wait for; the engine's order holds among the rest).
    pub(super) async fn execute(
        &self,
        job: &Arc<Job>,
        bytes: usize,
        effects: Vec<Effect>,
    ) -> Result<Done, CoordinatorError> {
        let (dispatches, rest): (Vec<Effect>, Vec<Effect>) = effects
            .into_iter()
            .partition(|e| matches!(e, Effect::Dispatch { .. }));
        let mut done = Done::default();
        for effect in dispatches.into_iter().chain(rest) {
            match effect {
                Effect::Dispatch { stage_id, task_ids } => {
                    let sent = self
                        .publish_and_mark(job, &stage_id, &task_ids, MarkWhen::Later)
                        .await?;
                    if let Some(sent) = sent {
                        done.confirmed = done.confirmed.or(Some(sent.confirmed));
                        let at = sent.marked;
                        done.marks.push(Mark {
                            stage_id,
                            task_ids,
                            at,
                        });
                    }
                }
                Effect::Notify(notice) => self.notify(job, notice).await,
                Effect::Archive => {
                    // Moved with the jobs of other archives ready now (`commit.rs`).
                    let archive = self.committer.archive(job.clone(), bytes);
                    meter::timed("archive", archive).await?;
                    info!(job_id = %job.id, status = job.status.as_str(), "job archived");
                }
            }
        }
        Ok(done)
    }

    /// Publishes the current attempt of `task_ids` and marks them dispatched, returning once
    /// the mark is written (the sweep's re-publishes: the sweep looks again soon). Returns, if
    /// anything was published, when the broker confirmed it and the time written as the mark.
    pub async fn dispatch(
        &self,
        job: &Job,
        stage_id: &StageId,
        task_ids: &[TaskId],
    ) -> Result<Option<Dispatched>, CoordinatorError> {
        self.publish_and_mark(job, stage_id, task_ids, MarkWhen::Now)
            .await
    }

    async fn publish_and_mark(
        &self,
        job: &Job,
        stage_id: &StageId,
        task_ids: &[TaskId],
        when: MarkWhen,
    ) -> Result<Option<Dispatched>, CoordinatorError> {
        let Some(ToDispatch { worker, tasks }) = to_dispatch(job, stage_id, task_ids) else {
            return Ok(None);
        };
        if tasks.is_empty() {
            return Ok(None);
        }
        // In chunks, built one at a time, so a wide stage never holds every message at once.
        for chunk in tasks.chunks(DISPATCH_CHUNK) {
            let messages: Vec<StageDispatch> = chunk
                .iter()
                .map(|task| message(job, stage_id, &worker, task))
                .collect();
            meter::timed("publish", self.broker.dispatch(&worker.id, &messages)).await?;
        }
        let confirmed = Instant::now();
        meter::tasks_dispatched(&worker.id, tasks.len());
        let marked = self.clock.now();
        // Written with the marks of other dispatches (see `writers`); a lost one costs a
        // re-publish, no more.
        let mark = DispatchMark::new(job, stage_id, task_ids, marked);
        match when {
            MarkWhen::Now => self.writers.mark(mark).await,
            MarkWhen::Later => self.writers.mark_later(mark).await,
        }
        // A copy kept for the next event would lack this mark: drop it (a batch that
        // dispatched keeps a marked copy of its own).
        self.cache.take(&job.id);
        debug!(job_id = %job.id, stage_id = %stage_id, tasks = tasks.len(), "tasks dispatched");
        Ok(Some(Dispatched { confirmed, marked }))
    }

    /// Hands a notice to the events publisher (see `writers`). Best effort: the job change is
    /// already durable, and a lost event must not undo it.
    async fn notify(&self, job: &Job, notice: Notice) {
        let (routing_key, stage_id) = match &notice {
            Notice::Job(status) => (format!("job.{}", status.as_str()), None),
            Notice::StageCompleted(stage) => ("stage.completed".to_owned(), Some(stage.clone())),
        };
        let at = self.clock.now();
        let event = JobEvent {
            job_id: job.id.clone(),
            run_id: job.run_id.clone(),
            status: job.status,
            stage_id,
            at,
        };
        let event = EventBody::Job(event);
        self.writers
            .announce(Announced { routing_key, event })
            .await;
        if matches!(notice, Notice::Job(status) if !status.is_active()) {
            self.announce_cleanup(job, at).await;
        }
    }

    /// `job.cleanup`: the outputs of the ended job's intermediate stages, in parts.
    async fn announce_cleanup(&self, job: &Job, at: Timestamp) {
        let parts = cleanup_parts(job, CLEANUP_PART_BYTES);
        let count = parts.len();
        for (index, stages) in parts.into_iter().enumerate() {
            let cleanup = JobCleanup {
                job_id: job.id.clone(),
                run_id: job.run_id.clone(),
                status: job.status,
                part: index + 1,
                parts: count,
                stages,
                at,
            };
            let routing_key = "job.cleanup".to_owned();
            let event = EventBody::Cleanup(cleanup);
            self.writers
                .announce(Announced { routing_key, event })
                .await;
        }
    }
}
