//! The results intake: what one stage-result delivery means, and how hard to try before
//! settling it (docs/protocol.md, "Consuming results"; docs/consistency.md, "Transient and
//! permanent errors").
//!
//! [`Intake`] is the [`DeliveryHandler`] the AMQP consumer is given. A transient failure is
//! retried in process with backoff, so a short outage of the store holds the message unacked
//! instead of bouncing it towards the delivery limit. A try counts only while the store
//! answers pings: [`MAX_TRIES`] failures then make the failure the message's own, and the
//! attempt fails with the reason. While the store does not answer, the delivery is held for
//! at most [`MAX_HOLD`], then handed back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::coordinator::{Coordinator, CoordinatorError, Handled};
use crate::domain::{Event, TaskResult};
use crate::messages::{StageResult, clip_log, normalize_outputs};
use crate::meter;
use crate::ports::{DeliveryHandler, JobStore, Settle};

/// Largest result body accepted; a larger one is dead-lettered.
pub const MAX_RESULT_BYTES: usize = 4 * 1024 * 1024;
/// Longest pause between in-process retries of a delivery whose store write failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most bytes of result bodies parsed and applied at once by one replica; deliveries past it
/// wait, unacknowledged, until earlier ones are settled.
pub const RESULT_BYTES_IN_HAND: usize = 64 * 1024 * 1024;
/// Most in-process tries of a delivery that fails while the store answers pings: past it, the
/// failure is taken to be the message's own and the attempt fails with the reason.
pub const MAX_TRIES: u32 = 8;
/// Longest a delivery is held while this replica cannot reach the store: then it is handed
/// back (nack with requeue) for a replica that can. Each hand-back counts towards the results
/// queue's delivery limit of 20, so a result outlives an outage of every replica of about 40
/// minutes before it is dead-lettered (and its task, timed out, is dispatched again).
pub const MAX_HOLD: Duration = Duration::from_secs(120);

/// What one try at a delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect is durable: ack.
    Processed,
    /// It changes nothing (duplicate, unknown or ended job): ack, and log why.
    Ignored(String),
    /// It can never be processed: reject without requeue, so it lands in `P.results.dead`.
    DeadLetter(String),
    /// A retry in this process may help (the store or broker is unavailable).
    Retry(String),
    /// Hand it back (too many lost races, an unreachable store, shutting down).
    Requeue(String),
    /// The result is well formed but cannot be recorded as sent (the store refuses it, now
    /// and on every retry): record it as a failed attempt with the reason instead.
    Refused(String),
}

impl Outcome {
    /// How the delivery is settled, logged with its reason.
    fn settle(&self) -> Settle {
        match self {
            Self::Processed => Settle::Ack,
            Self::Ignored(reason) => {
                info!(reason = %reason, "result ignored");
                Settle::Ack
            }
            Self::DeadLetter(reason) => {
                meter::dead_lettered();
                warn!(reason = %reason, "result dead-lettered");
                Settle::Reject
            }
            Self::Requeue(reason) | Self::Retry(reason) | Self::Refused(reason) => {
                warn!(reason = %reason, "result requeued");
                Settle::Requeue
            }
        }
    }
}

/// Turns a parsed result into an engine event. Outputs of the wrong shape fail the attempt with
/// the reason rather than vanish, so the job shows why.
pub fn result_event(result: StageResult) -> Event {
    let (outputs, error) = match normalize_outputs(result.outputs) {
        Ok(outputs) => (outputs, result.error),
        Err(reason) => (Vec::new(), Some(format!("invalid outputs: {reason}"))),
    };
    Event::Result(TaskResult {
        task_id: result.task_id,
        run_id: result.run_id,
        outputs,
        log: clip_log(result.log),
        error: clip_log(error),
    })
}

/// Parses a delivery's body, or says why it is dead-lettered.
fn parse(body: &[u8]) -> Result<StageResult, Outcome> {
    if body.len() > MAX_RESULT_BYTES {
        return Err(Outcome::DeadLetter(format!(
            "body of {} bytes exceeds the limit of {MAX_RESULT_BYTES}",
            body.len()
        )));
    }
    serde_json::from_slice(body)
        .map_err(|error| Outcome::DeadLetter(format!("not a valid stage-result: {error}")))
}

/// The results intake of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    coordinator: Coordinator,
    /// Pinged to tell a failing store from a failing message.
    store: Arc<dyn JobStore>,
    /// Bounds the bytes of result bodies in hand (see [`RESULT_BYTES_IN_HAND`]).
    budget: Arc<Semaphore>,
}

/// One delivery in hand, as it is tried again and again.
struct Tries<'a> {
    body: &'a [u8],
    /// When the delivery was taken (the latency metric starts there).
    received: Instant,
    /// The same, on tokio's clock, which tests can move on.
    held_since: tokio::time::Instant,
    /// Counted only while the store answers pings.
    count: u32,
    /// Once the result is refused as sent, why: it is then recorded as a failed attempt.
    refusal: Option<String>,
}

impl Intake {
    pub fn new(coordinator: Coordinator, store: Arc<dyn JobStore>) -> Self {
        Self {
            coordinator,
            store,
            budget: Arc::new(Semaphore::new(RESULT_BYTES_IN_HAND)),
        }
    }

    /// One try at a delivery: recorded as sent, or once refused, as a failed attempt with the
    /// reason (if even that is refused, it is dead-lettered).
    async fn attempt(&self, tries: &Tries<'_>) -> Outcome {
        let mut result = match parse(tries.body) {
            Ok(result) => result,
            Err(outcome) => return outcome,
        };
        let Some(reason) = &tries.refusal else {
            return self.record(result, tries.received).await;
        };
        result.outputs = serde_json::Value::Null;
        result.log = None;
        result.error = Some(format!("the result could not be recorded: {reason}"));
        match self.record(result, tries.received).await {
            Outcome::Refused(again) => Outcome::DeadLetter(format!(
                "the result could not be recorded ({reason}), nor its failure ({again})"
            )),
            other => other,
        }
    }

    /// Applies a result to its job. `received` is when the delivery was taken from the queue
    /// (the latency metric starts there).
    async fn record(&self, result: StageResult, received: Instant) -> Outcome {
        let job_id = result.job_id.clone();
        let task_id = result.task_id.clone();
        match self.coordinator.handle(&job_id, result_event(result)).await {
            Ok(Handled::Applied { dispatched, .. }) => {
                if let Some(confirmed) = dispatched {
                    meter::result_to_dispatch(confirmed.saturating_duration_since(received));
                }
                Outcome::Processed
            }
            Ok(Handled::Ignored(reason)) => {
                meter::result_ignored(reason.as_str());
                Outcome::Ignored(format!("{} (task {task_id})", reason.as_str()))
            }
            Ok(Handled::UnknownJob) => {
                meter::result_ignored("unknown job");
                Outcome::Ignored(format!(
                    "no active job '{job_id}' (unknown or ended; task {task_id})"
                ))
            }
            Err(error @ CoordinatorError::Contention(_)) => Outcome::Requeue(error.to_string()),
            Err(error) if error.is_transient() => Outcome::Retry(error.to_string()),
            Err(error) => Outcome::Refused(error.to_string()),
        }
    }

    /// What to do after a failed try with `reason`: `None` to try again after a pause, or the
    /// outcome to settle with. A try counts only while the store answers.
    async fn judge(&self, tries: &mut Tries<'_>, reason: &str) -> Option<Outcome> {
        if self.store.ping().await.is_ok() {
            tries.count += 1;
        } else if tries.held_since.elapsed() >= MAX_HOLD {
            // This replica cannot reach the store; another one may.
            let held = tries.held_since.elapsed().as_secs();
            return Some(Outcome::Requeue(format!(
                "{reason} (the store unreachable for {held} s)"
            )));
        }
        if tries.count < MAX_TRIES {
            return None;
        }
        let reason = format!("{reason} (failed {} times)", tries.count);
        // Even its failure could not be recorded: hand it back.
        Some(match tries.refusal {
            None => Outcome::Refused(reason),
            Some(_) => Outcome::Requeue(reason),
        })
    }

    /// Handles one delivery to the end (see the module's header).
    async fn process(
        &self,
        body: &[u8],
        held: &(dyn Fn() -> bool + Send + Sync),
        shutdown: &CancellationToken,
    ) -> Settle {
        let (received, held_since) = (Instant::now(), tokio::time::Instant::now());
        // Bounds the bytes parsed at once; the semaphore is never closed.
        let permits = u32::try_from(body.len().clamp(1, MAX_RESULT_BYTES)).unwrap_or(1);
        let _permit = self.budget.acquire_many(permits).await;
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        let mut tries = Tries {
            body,
            received,
            held_since,
            count: 0,
            refusal: None,
        };
        let mut outcome = self.attempt(&tries).await;
        loop {
            let reason = match &outcome {
                Outcome::Retry(reason) => reason.clone(),
                Outcome::Refused(reason) if tries.refusal.is_none() => {
                    meter::result_refused();
                    warn!(reason = %reason, "result refused by the store; failing the attempt");
                    tries.refusal = Some(reason.clone());
                    tries.count = 0;
                    outcome = self.attempt(&tries).await;
                    continue;
                }
                _ => return outcome.settle(),
            };
            if !held() {
                // The channel is gone and the broker redelivers the message.
                return Settle::Abandon;
            }
            if let Some(last) = self.judge(&mut tries, &reason).await {
                outcome = last;
                continue;
            }
            let pause = backoff.pause();
            warn!(reason = %reason, backoff_ms = pause.as_millis() as u64, tries = tries.count, "result not processed yet; retrying");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return Outcome::Requeue("shutting down".into()).settle(),
            }
            outcome = self.attempt(&tries).await;
        }
    }
}

impl DeliveryHandler for Intake {
    fn handle<'a>(
        &'a self,
        body: &'a [u8],
        held: &'a (dyn Fn() -> bool + Send + Sync),
        shutdown: &'a CancellationToken,
    ) -> BoxFuture<'a, Settle> {
        self.process(body, held, shutdown).boxed()
    }
}

#[cfg(test)]
mod tests;
