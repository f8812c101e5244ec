//! The result consumer: one decision per delivery, and a thin loop around it.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, message::Delivery};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::coordinator::{Coordinator, CoordinatorError, Handled};
use crate::domain::{Event, TaskResult};
use crate::messages::{StageResult, clip_log, normalize_outputs};
use crate::meter;

/// Largest result body accepted; a larger one is dead-lettered.
pub const MAX_RESULT_BYTES: usize = 4 * 1024 * 1024;
/// Longest pause between in-process retries of a delivery whose store write failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
        outputs,
        log: clip_log(result.log),
        error: clip_log(error),
    })
}

/// Decides what one result delivery means, carrying out its effect on the job.
pub async fn handle_delivery(coordinator: &Coordinator, body: &[u8]) -> Outcome {
    if body.len() > MAX_RESULT_BYTES {
        return Outcome::DeadLetter(format!(
            "body of {} bytes exceeds the limit of {MAX_RESULT_BYTES}",
            body.len()
        ));
    }
    let result: StageResult = match serde_json::from_slice(body) {
        Ok(result) => result,
        Err(error) => return Outcome::DeadLetter(format!("not a valid stage-result: {error}")),
    };
    let job_id = result.job_id.clone();
    let task_id = result.task_id.clone();
    let started = std::time::Instant::now();
    match coordinator.handle(&job_id, result_event(result)).await {
        Ok(Handled::Applied { dispatched, .. }) => {
            if let Some(confirmed) = dispatched {
                meter::result_to_dispatch(confirmed.saturating_duration_since(started));
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
        Err(error) => Outcome::Retry(error.to_string()),
    }
}

/// Handles one delivery to the end: retries in process while a retry may help, so an outage of
/// the store holds the message unacked instead of bouncing it towards the delivery limit.
async fn process(
    coordinator: Coordinator,
    channel: Channel,
    delivery: Delivery,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = handle_delivery(&coordinator, &delivery.data).await;
        let acked = match &outcome {
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
            Outcome::Requeue(reason) => {
                warn!(reason = %reason, "result requeued");
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
            Outcome::Retry(_) if !channel.status().connected() => {
                // The channel is gone and the broker redelivers the message; nothing to settle.
                return;
            }
            Outcome::Retry(reason) => {
                warn!(reason = %reason, backoff_ms = backoff.as_millis() as u64, "result not processed yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    _ = shutdown.cancelled() => {
                        // Hand it back for another replica or the next start.
                        delivery
                            .nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() })
                            .await
                    }
                }
            }
        };
        if let Err(error) = acked {
            // The channel is gone; the broker redelivers the message to another consumer.
            warn!(%error, "could not settle a delivery");
        }
        return;
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
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    in_flight.spawn(process(coordinator.clone(), channel.clone(), delivery, shutdown.clone()));
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
