//! The write loop: applies a batch of events to one copy of the job with the pure engine,
//! holds the result under the store's size limit, and writes it with one compare-and-set,
//! reading the job again and retrying when another writer won (docs/consistency.md,
//! "Compare-and-set").

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::Coordinator;
use super::cache::with_marks;
use super::error::{CoordinatorError, Handled};
use super::observe::{Step, event_worker, note_stage, observe};
use crate::domain::{Event, Job, JobId, Timestamp, apply_in_place};
use crate::meter;
use crate::ports::MAX_JOB_BYTES;

/// How often a lost compare-and-set is retried before giving up.
pub const MAX_CAS_ATTEMPTS: u32 = 32;

/// What writing one batch came to.
pub struct Written {
    /// One outcome per event, in order.
    pub outcomes: Vec<Handled>,
    /// The job to start the next batch from, when it is worth keeping.
    pub next: Option<Arc<Job>>,
}

/// A batch applied to one copy of the job, not yet written.
struct Applied {
    job: Job,
    steps: Vec<Step>,
    /// `None` for an event that changed the job (its outcome is known once written).
    outcomes: Vec<Option<Handled>>,
    /// The failure that replaced the batch because the job would grow too large.
    failure: Option<Event>,
    /// The size of the job as stored (before any failure replaced it).
    bytes: usize,
}

/// Applies `events` in order to one copy of `before`, changed in place by every event: a wide
/// stage's job is large, and a copy per event made a batch quadratic in it.
fn apply_events(before: &Job, events: &[Event], now: Timestamp) -> Applied {
    let mut job = before.clone();
    let mut steps = Vec::new();
    let mut outcomes = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let worker = event_worker(&job, event);
        let stage_before = job.current_stage.as_ref().map(|s| s.id.clone());
        match apply_in_place(&mut job, event, now) {
            Err(reason) => outcomes.push(Some(Handled::Ignored(reason))),
            Ok(effects) => {
                let step = Step::new(index, worker, event, stage_before.as_ref(), &job, effects);
                steps.push(step);
                outcomes.push(None);
            }
        }
    }
    job.version = before.version + 1;
    Applied {
        job,
        steps,
        outcomes,
        failure: None,
        bytes: 0,
    }
}

/// When the applied job would take more than the store accepts, fails the job from `before`
/// instead: the store would refuse the record now and on every retry, leaving it stuck.
fn hold_size(before: &Job, applied: &mut Applied, bytes: usize, now: Timestamp) {
    if bytes <= MAX_JOB_BYTES {
        return;
    }
    let reason = format!(
        "the job's record would take {:.1} MiB, more than the {} MiB a job may take in the database",
        bytes as f64 / 1024.0 / 1024.0,
        MAX_JOB_BYTES / 1024 / 1024
    );
    warn!(job_id = %before.id, bytes, events = applied.outcomes.len(), "{reason}; failing the job");
    let event = Event::Fail { reason };
    let mut job = before.clone();
    let effects = apply_in_place(&mut job, &event, now).unwrap_or_default();
    job.version = before.version + 1;
    applied.steps = vec![Step::new(0, String::new(), &event, None, &job, effects)];
    applied.job = job;
    applied.failure = Some(event);
}

/// Pauses before the next try after a lost race, spreading competing writers a little.
async fn after_lost_race(attempt: u32) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
    let pause = u64::from(attempt.min(5)) * 2 + jitter;
    tokio::time::sleep(Duration::from_millis(pause)).await;
}

impl Coordinator {
    /// Applies `events` in order to the job in one compare-and-set: one outcome per event.
    ///
    /// `known` is the job as this process last wrote it, if it did: the first attempt starts
    /// from it instead of reading the job again (a wide stage's job is megabytes). A copy may
    /// be behind the store, so it can vouch for a change (the compare-and-set checks it) but
    /// not for ignoring an event: then the job is read and the batch decided again.
    ///
    /// With `note`, the stage the job is in when first read is recorded on the current span
    /// (once: a field recorded again is printed again).
    pub(super) async fn apply_batch(
        &self,
        id: &JobId,
        events: &[Event],
        mut known: Option<Arc<Job>>,
        mut note: bool,
    ) -> Result<Written, CoordinatorError> {
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let cached = known.is_some();
            let before = match known.take() {
                Some(job) => Arc::unwrap_or_clone(job),
                None => match meter::timed("load", self.store.load_job(id)).await? {
                    Some(job) => job,
                    None => return Ok(Written::unknown(events.len())),
                },
            };
            if std::mem::take(&mut note) {
                note_stage(before.current_stage.as_ref().map(|s| &s.id));
            }
            let now = self.clock.now();
            let applying = std::time::Instant::now();
            let mut applied = apply_events(&before, events, now);
            if cached && applied.steps.len() < events.len() {
                continue;
            }
            if applied.steps.is_empty() {
                // Nothing to write; the starting point is still good for the next batch.
                let outcomes = applied.outcomes.into_iter().flatten().collect();
                let next = Some(Arc::new(before));
                return Ok(Written { outcomes, next });
            }
            let bytes = self.store.job_bytes(&applied.job)?;
            applied.bytes = bytes;
            hold_size(&before, &mut applied, bytes, now);
            meter::step("apply", applying.elapsed());
            // Sent with the compare-and-sets of other jobs ready now (`commit.rs`).
            let write = self.committer.compare_and_set(before, applied.job, bytes);
            if let Some(job) = meter::timed("write", write).await? {
                applied.job = job;
                meter::events_applied(if cached { "copy" } else { "read" }, events.len());
                return self.carry_out(events, applied).await;
            }
            if !cached {
                // A copy behind the store is no race: the job is just read.
                meter::cas_conflict();
                debug!(
                    attempt,
                    events = events.len(),
                    "lost a compare-and-set race; reloading"
                );
                after_lost_race(attempt).await;
            }
        }
        Err(CoordinatorError::Contention(MAX_CAS_ATTEMPTS))
    }

    /// Records the metrics of a written batch and carries out its effects.
    async fn carry_out(
        &self,
        events: &[Event],
        applied: Applied,
    ) -> Result<Written, CoordinatorError> {
        meter::job_written(applied.steps.len());
        // One shared copy of the written job for every outcome of the batch.
        let written = Arc::new(applied.job);
        let bytes = applied.bytes;
        let mut effects = Vec::new();
        let mut dispatching = Vec::new();
        for step in applied.steps {
            let event = applied.failure.as_ref().unwrap_or(&events[step.index]);
            observe(&step, event, &written);
            if step.dispatches() {
                dispatching.push(step.index);
            }
            effects.extend(step.effects);
        }
        let done = self.execute(&written, bytes, effects).await?;
        // Events a failure swallowed were taken into account too: the job ended.
        let outcomes = applied
            .outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| {
                outcome.unwrap_or_else(|| Handled::Applied {
                    job: written.clone(),
                    dispatched: done.confirmed.filter(|_| dispatching.contains(&index)),
                })
            })
            .collect();
        // The next batch may start from this copy, with the outbox marks the store got since
        // the write.
        let next = if !written.status.is_active() {
            None
        } else if done.marks.is_empty() {
            Some(written)
        } else {
            Some(Arc::new(with_marks(
                Arc::unwrap_or_clone(written),
                &done.marks,
            )))
        };
        Ok(Written { outcomes, next })
    }
}

impl Written {
    /// No active job: every event's outcome says so.
    fn unknown(events: usize) -> Self {
        Self {
            outcomes: (0..events).map(|_| Handled::UnknownJob).collect(),
            next: None,
        }
    }
}
