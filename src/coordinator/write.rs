//! The write loop: applies a batch of events to one copy of the job with the pure engine,
//! holds the result under the store's size limit, and writes it with one compare-and-set,
//! reading the job again and retrying when another writer won (docs/consistency.md,
//! "Compare-and-set").

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::Coordinator;
use super::cache::{JobCopy, with_marks};
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
    pub next: Option<JobCopy>,
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
        let started_before = job.started.is_some();
        match apply_in_place(&mut job, event, now) {
            Err(reason) => outcomes.push(Some(Handled::Ignored(reason))),
            Ok(effects) => {
                let step = Step::new(index, worker, event, started_before, &job, effects);
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

/// What one event may add to a job's stored size besides its own text: a status, a time, an
/// earlier attempt's id, the store's keys.
const EVENT_BYTES: usize = 512;

/// At most the stored size of `applied`, from `before`'s (`known`) without measuring it: when
/// the batch kept the job in the same stage, each event changed one task by at most its
/// result's text (8 times its JSON: BSON spends up to 16 bytes on what JSON writes in 2) and
/// [`EVENT_BYTES`]. `None` when that does not hold, or the bound would reach the limit: then
/// the job is measured. A wide stage's job is megabytes to serialise, on every batch.
fn size_bound(
    known: Option<usize>,
    before: &Job,
    applied: &Applied,
    events: &[Event],
) -> Option<usize> {
    let after = &applied.job;
    let stage = |job: &Job| {
        job.current_stage
            .as_ref()
            .map(|s| (s.id.clone(), s.tasks.len()))
    };
    if after.status != before.status
        || after.stages.len() != before.stages.len()
        || stage(after) != stage(before)
    {
        return None;
    }
    let mut bound = known?;
    for event in events {
        let text = match event {
            Event::Result(result) | Event::Skip(result) => {
                let outputs =
                    serde_json::to_vec(&result.outputs).map_or(usize::MAX / 16, |v| v.len());
                let log = result.log.as_ref().map_or(0, String::len);
                let error = result.error.as_ref().map_or(0, String::len);
                outputs + log + error
            }
            Event::Fail { reason } => reason.len(),
            Event::Start | Event::Abort | Event::Pause | Event::Resume | Event::Timeout { .. } => 0,
        };
        bound = bound
            .saturating_add(text.saturating_mul(8))
            .saturating_add(EVENT_BYTES);
    }
    (bound <= MAX_JOB_BYTES).then_some(bound)
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
    let started_before = before.started.is_some();
    applied.steps = vec![Step::new(
        0,
        String::new(),
        &event,
        started_before,
        &job,
        effects,
    )];
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
        mut known: Option<JobCopy>,
        mut note: bool,
    ) -> Result<Written, CoordinatorError> {
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let cached = known.is_some();
            // Shared, not copied: the batch applies to one copy of its own (`apply_events`), and
            // the previous batch's outcomes may still hold this one.
            let copy = match known.take() {
                Some(copy) => copy,
                None => match meter::timed("load", self.store.load_job(id)).await? {
                    Some(job) => JobCopy::new(Arc::new(job)),
                    None => return Ok(Written::unknown(events.len())),
                },
            };
            if std::mem::take(&mut note) {
                note_stage(copy.job.current_stage.as_ref().map(|s| &s.id));
            }
            let now = self.clock.now();
            let applying = std::time::Instant::now();
            let mut applied = apply_events(&copy.job, events, now);
            if cached && applied.steps.len() < events.len() {
                continue;
            }
            if applied.steps.is_empty() {
                // Nothing to write; the starting point is still good for the next batch.
                let outcomes = applied.outcomes.into_iter().flatten().collect();
                return Ok(Written {
                    outcomes,
                    next: Some(copy),
                });
            }
            let before = copy.job;
            let bytes = match size_bound(copy.bytes, &before, &applied, events) {
                Some(bound) => bound,
                None => self.store.job_bytes(&applied.job)?,
            };
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
        let job = if !written.status.is_active() {
            self.cache.ended(&written);
            None
        } else if done.marks.is_empty() {
            Some(written)
        } else {
            Some(Arc::new(with_marks(
                Arc::unwrap_or_clone(written),
                &done.marks,
            )))
        };
        // A failure that replaced the batch measured the job before it, not the one written;
        // marks make the copy larger than measured (a `dispatched` per task): measure again.
        let measured = applied.failure.is_none() && done.marks.is_empty();
        let bytes = measured.then_some(bytes);
        let next = job.map(|job| JobCopy { job, bytes });
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::fakes::{done, sample_job};
    use crate::store::job_bytes;

    /// Results for the first `count` tasks of the stage in flight, each with `outputs`.
    fn results(job: &Job, count: usize, outputs: &[Value]) -> Vec<Event> {
        let stage = job.current_stage.as_ref().expect("a stage in flight");
        let tasks = stage.tasks.iter().take(count);
        tasks.map(|t| done(&t.task_id, outputs.to_vec())).collect()
    }

    fn bound_of(before: &Job, events: &[Event]) -> (Option<usize>, usize) {
        let applied = apply_events(before, events, Timestamp::now());
        let exact = job_bytes(&before.clone()).expect("bytes");
        let bound = size_bound(Some(exact), before, &applied, events);
        (bound, job_bytes(&applied.job).expect("bytes"))
    }

    #[test]
    fn results_within_a_stage_are_bounded_without_measuring_the_job() {
        let before = sample_job("bound", 600);
        // Small numbers in a list: what BSON takes the most room for, next to JSON.
        let numbers = vec![json!({"n": (0..200).collect::<Vec<_>>()}), json!(null)];
        for outputs in [
            vec![json!({})],
            numbers,
            vec![json!({"text": "é".repeat(300)})],
        ] {
            let events = results(&before, 40, &outputs);
            let (bound, exact) = bound_of(&before, &events);
            let bound = bound.expect("a bound");
            assert!(bound >= exact, "bound {bound} under the size {exact}");
        }
    }

    #[test]
    fn a_batch_that_ends_the_stage_or_nears_the_limit_is_measured() {
        let before = sample_job("bound-end", 3);
        let (bound, _) = bound_of(&before, &results(&before, 3, &[json!({"n": 1})]));
        assert_eq!(bound, None, "the stage ended: the next one's tasks are new");

        let events = results(&before, 1, &[json!({"n": 1})]);
        let applied = apply_events(&before, &events, Timestamp::now());
        assert_eq!(
            size_bound(None, &before, &applied, &events),
            None,
            "size unknown"
        );
        let near = Some(MAX_JOB_BYTES - EVENT_BYTES);
        assert_eq!(
            size_bound(near, &before, &applied, &events),
            None,
            "near the limit"
        );
    }
}
