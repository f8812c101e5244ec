//! The result consumer: takes deliveries from the results queue, hands each to the handler it
//! is given, and settles it as the handler says (docs/protocol.md, "Consuming results").

use std::sync::Arc;

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

use crate::ports::{DeliveryHandler, Settle};

/// Handles one delivery and settles it.
async fn process(
    handler: Arc<dyn DeliveryHandler>,
    channel: Channel,
    delivery: Delivery,
    shutdown: CancellationToken,
) {
    let held = move || channel.status().connected();
    let settled = match handler.handle(&delivery.data, &held, &shutdown).await {
        Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
        Settle::Reject => delivery.reject(BasicRejectOptions { requeue: false }).await,
        Settle::Requeue => {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            delivery.nack(requeue).await
        }
        Settle::Abandon => Ok(true),
    };
    if let Err(error) = settled {
        // The channel is gone; the broker redelivers the message to another consumer.
        warn!(%error, "could not settle a delivery");
    }
}

/// Consumes `queue` on `channel` until `shutdown`, handing each delivery to `handler`; then
/// stops taking deliveries and drains those it holds.
pub async fn run(
    channel: Channel,
    queue: String,
    handler: Arc<dyn DeliveryHandler>,
    prefetch: u16,
    shutdown: CancellationToken,
) -> Result<(), lapin::Error> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
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
                    in_flight.spawn(process(handler.clone(), channel.clone(), delivery, shutdown.clone()));
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
