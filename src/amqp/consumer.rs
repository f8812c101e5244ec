//! The result consumer: one decision per delivery, and a thin loop around it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, message::Delivery};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::coordinator::{Coordinator, CoordinatorError, Handled};
use crate::domain::{Event, TaskResult};
use crate::messages::{StageResult, clip_log, normalize_outputs};
use crate::meter;

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

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect is durable: ack.
    Processed,
    /// It changes nothing (duplicate, unknown or ended job): ack, and log why.
    Ignored(String),
    /// It can never be processed: reject without requeue, so it lands in `P.results.dead`.
    DeadLetter(String),
    /// A retry in this process may help (the store or broker is unavailable): hold the delivery
    /// and try again with backoff, so an outage does not bounce it towards the delivery limit.
    Retry(String),
    /// Too many lost compare-and-set races: nack with requeue, so it comes back later, perhaps
    /// to another replica.
    Requeue(String),
    /// The result is well formed but cannot be recorded as sent (the store refuses it, now and
    /// on every retry): record it as a failed attempt with the reason instead.
    Refused(String),
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

/// Decides what one result delivery means, carrying out its effect on the job.
/// `received` is when the delivery was taken from the queue (the latency metric starts there).
pub async fn handle_delivery(coordinator: &Coordinator, body: &[u8], received: Instant) -> Outcome {
    match parse(body) {
        Ok(result) => handle_result(coordinator, result, received).await,
        Err(outcome) => outcome,
    }
}

/// Records the result of a delivery whose result could not be recorded as sent: the attempt
/// fails with `reason`. If even that cannot be recorded, the delivery is dead-lettered.
pub async fn handle_refused(
    coordinator: &Coordinator,
    body: &[u8],
    reason: &str,
    received: Instant,
) -> Outcome {
    let mut result = match parse(body) {
        Ok(result) => result,
        Err(outcome) => return outcome,
    };
    result.outputs = serde_json::Value::Null;
    result.log = None;
    result.error = Some(format!("the result could not be recorded: {reason}"));
    match handle_result(coordinator, result, received).await {
        Outcome::Refused(again) => Outcome::DeadLetter(format!(
            "the result could not be recorded ({reason}), nor its failure ({again})"
        )),
        other => other,
    }
}

async fn handle_result(
    coordinator: &Coordinator,
    result: StageResult,
    received: Instant,
) -> Outcome {
    let job_id = result.job_id.clone();
    let task_id = result.task_id.clone();
    match coordinator.handle(&job_id, result_event(result)).await {
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

/// Handles one delivery to the end. A transient failure is retried in process with backoff, so
/// a short outage of the store holds the message unacked instead of bouncing it towards the
/// delivery limit. A try counts only while the store answers pings: [`MAX_TRIES`] failures then
/// make the failure the message's own, and the attempt fails with the reason. While the store
/// does not answer, the delivery is held for at most [`MAX_HOLD`], then handed back.
async fn process(
    coordinator: Coordinator,
    channel: Channel,
    delivery: Delivery,
    budget: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let received = Instant::now();
    // Bounds the bytes parsed at once; a closed semaphore never happens (it is never closed).
    let permits = u32::try_from(delivery.data.len().clamp(1, MAX_RESULT_BYTES)).unwrap_or(1);
    let _permit = budget.acquire_many(permits).await;
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
    let mut tries = 0;
    // Recorded as sent first; once refused, as a failed attempt with the reason.
    let mut refusal: Option<String> = None;
    let mut outcome = attempt(&coordinator, &delivery.data, None, received).await;
    loop {
        let reason = match &outcome {
            Outcome::Retry(reason) => reason.clone(),
            Outcome::Refused(reason) if refusal.is_none() => {
                meter::result_refused();
                warn!(reason = %reason, "result refused by the store; failing the attempt");
                refusal = Some(reason.clone());
                tries = 0;
                outcome = attempt(&coordinator, &delivery.data, refusal.as_deref(), received).await;
                continue;
            }
            _ => break,
        };
        if !channel.status().connected() {
            // The channel is gone and the broker redelivers the message; nothing to settle.
            return;
        }
        if coordinator.store().ping().await.is_ok() {
            tries += 1;
        } else if received.elapsed() >= MAX_HOLD {
            // This replica cannot reach the store; another one may.
            outcome = Outcome::Requeue(format!(
                "{reason} (the store unreachable for {} s)",
                received.elapsed().as_secs()
            ));
            break;
        }
        if tries >= MAX_TRIES {
            let reason = format!("{reason} (failed {tries} times)");
            // Even its failure could not be recorded: hand it back.
            outcome = match refusal {
                None => Outcome::Refused(reason),
                Some(_) => Outcome::Requeue(reason),
            };
            continue;
        }
        let pause = backoff.pause();
        warn!(reason = %reason, backoff_ms = pause.as_millis() as u64, tries, "result not processed yet; retrying");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => {
                outcome = Outcome::Requeue("shutting down".into());
                break;
            }
        }
        outcome = attempt(&coordinator, &delivery.data, refusal.as_deref(), received).await;
    }
    settle(&delivery, &outcome).await;
}

/// Records a delivery's result as sent or, once refused, as a failed attempt with the reason.
async fn attempt(
    coordinator: &Coordinator,
    body: &[u8],
    refusal: Option<&str>,
    received: Instant,
) -> Outcome {
    match refusal {
        None => handle_delivery(coordinator, body, received).await,
        Some(reason) => handle_refused(coordinator, body, reason, received).await,
    }
}

/// Acks, rejects or requeues a delivery as `outcome` says.
async fn settle(delivery: &Delivery, outcome: &Outcome) {
    let settled = match outcome {
        Outcome::Processed => delivery.ack(BasicAckOptions::default()).await,
        Outcome::Ignored(reason) => {
            info!(reason = %reason, "result ignored");
            delivery.ack(BasicAckOptions::default()).await
        }
        Outcome::DeadLetter(reason) => {
            meter::dead_lettered();
            warn!(reason = %reason, "result dead-lettered");
            delivery.reject(BasicRejectOptions { requeue: false }).await
        }
        Outcome::Requeue(reason) | Outcome::Retry(reason) | Outcome::Refused(reason) => {
            warn!(reason = %reason, "result requeued");
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
        }
    };
    if let Err(error) = settled {
        // The channel is gone; the broker redelivers the message to another consumer.
        warn!(%error, "could not settle a delivery");
    }
}

/// Consumes `P.results` until `shutdown`, then stops taking deliveries and drains those it holds.
pub async fn run(
    channel: Channel,
    coordinator: Coordinator,
    prefetch: u16,
    shutdown: CancellationToken,
) -> Result<(), lapin::Error> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let queue = coordinator.names().results_queue();
    let tag = format!("job-manager-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            queue.clone().into(),
            tag.clone().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!(queue = %queue, prefetch, "consuming results");
    let mut in_flight = JoinSet::new();
    let budget = Arc::new(Semaphore::new(RESULT_BYTES_IN_HAND));
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    in_flight.spawn(process(coordinator.clone(), channel.clone(), delivery, budget.clone(), shutdown.clone()));
                }
                Some(Err(error)) => break Err(error),
                None => break Ok(()),
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    };
    if channel.status().connected()
        && let Err(error) = channel
            .basic_cancel(tag.into(), BasicCancelOptions::default())
            .await
    {
        debug!(%error, "cancel of the consumer failed");
    }
    while in_flight.join_next().await.is_some() {}
    if channel.status().connected() {
        let _ = channel.close(200, "consumer stopped".into()).await;
    }
    info!("result consumer stopped");
    result
}
