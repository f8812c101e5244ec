//! The result consumer: takes deliveries from the shared results queue and from every result
//! partition, hands each to the handler it is given, and settles it as the handler says
//! (docs/protocol.md, "Consuming results"). It also gives up the partitions it holds beyond its
//! fair share ([`super::partitions`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{self, BoxStream, SelectAll};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, message::Delivery};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::partitions;
use crate::meter;
use crate::ports::{DeliveryHandler, Settle};

/// How often a replica looks at the partitions it is active on, and the window it counts
/// deliveries over.
pub const REBALANCE_EVERY: Duration = Duration::from_secs(2);

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

/// The queues one replica consumes.
#[derive(Debug, Clone)]
pub struct Queues {
    /// `P.results`, shared by every replica.
    pub shared: String,
    /// `P.results.NN`, in partition order, each with a single active consumer.
    pub partitions: Vec<String>,
}

/// What the merged consumer streams yield: a delivery (or an error) from the queue at an index
/// of [`Consuming::queues`], or the end of that queue's consumer.
type Item = (usize, Option<Result<Delivery, lapin::Error>>);

/// The consumers of one channel: one per queue, merged into one stream.
struct Consuming {
    channel: Channel,
    /// The shared queue first, then the partitions.
    queues: Vec<String>,
    /// The current consumer tag of each queue.
    tags: Vec<String>,
    /// Queues whose consumer this replica cancelled to give the partition away, until its stream
    /// ends.
    releasing: BTreeSet<usize>,
    /// Partitions that delivered since the last look.
    active: BTreeSet<u16>,
    streams: SelectAll<BoxStream<'static, Item>>,
    /// Counts consumers, so every tag is new.
    consumed: u64,
}

impl Consuming {
    fn new(channel: Channel, queues: &Queues) -> Self {
        let mut all = vec![queues.shared.clone()];
        all.extend(queues.partitions.iter().cloned());
        Self {
            channel,
            tags: vec![String::new(); all.len()],
            queues: all,
            releasing: BTreeSet::new(),
            active: BTreeSet::new(),
            streams: SelectAll::new(),
            consumed: 0,
        }
    }

    /// Starts consuming the queue at `index` with a fresh tag.
    async fn consume(&mut self, index: usize) -> Result<(), lapin::Error> {
        self.consumed += 1;
        let tag = format!(
            "job-manager-{}-{}",
            uuid::Uuid::new_v4().simple(),
            self.consumed
        );
        let consumer = self
            .channel
            .basic_consume(
                self.queues[index].clone().into(),
                tag.clone().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.tags[index] = tag;
        let deliveries = consumer.map(move |next| (index, Some(next)));
        let end = stream::once(async move { (index, None) });
        self.streams.push(deliveries.chain(end).boxed());
        Ok(())
    }

    /// Notes a delivery from the queue at `index`.
    fn delivered(&mut self, index: usize) {
        if let Some(partition) = index.checked_sub(1) {
            self.active.insert(partition as u16);
        }
    }

    /// Gives up the partitions this replica was active on beyond its fair share, counting the
    /// replicas by the consumers of the shared queue (every replica consumes it; a partition
    /// counts only its active consumer).
    async fn rebalance(&mut self) -> Result<(), lapin::Error> {
        let active = std::mem::take(&mut self.active);
        meter::partitions_active(active.len());
        if active.len() <= 1 || !self.releasing.is_empty() {
            return Ok(());
        }
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let shared = self.queues[0].clone().into();
        let queue = self
            .channel
            .queue_declare(shared, passive, FieldTable::default())
            .await?;
        let release = partitions::to_release(&active, queue.consumer_count());
        if !release.is_empty() {
            info!(
                active = active.len(),
                replicas = queue.consumer_count(),
                releasing = ?release,
                "giving result partitions to other replicas"
            );
        }
        for partition in release {
            let index = usize::from(partition) + 1;
            self.releasing.insert(index);
            let tag = self.tags[index].clone().into();
            self.channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await?;
            meter::partition_released();
        }
        Ok(())
    }

    /// The consumer of the queue at `index` ended: when this replica released it, consumes it
    /// again (at the back of the line); otherwise the broker cancelled it, and the session is
    /// better opened again.
    async fn ended(&mut self, index: usize) -> Result<bool, lapin::Error> {
        if self.releasing.remove(&index) {
            self.consume(index).await?;
            return Ok(true);
        }
        warn!(queue = %self.queues[index], "the broker cancelled a result consumer");
        Ok(false)
    }

    /// Cancels every consumer, so the broker sends nothing more.
    async fn cancel_all(&mut self) {
        for tag in &self.tags {
            if !self.channel.status().connected() {
                return;
            }
            let cancelled = self
                .channel
                .basic_cancel(tag.clone().into(), BasicCancelOptions::default())
                .await;
            if let Err(error) = cancelled {
                debug!(%error, "cancel of a consumer failed");
            }
        }
    }
}

/// Consumes `queues` on `channel` until `shutdown`, handing each delivery to `handler`; then
/// stops taking deliveries and drains those it holds. `prefetch` is per queue.
pub async fn run(
    channel: Channel,
    queues: Queues,
    handler: Arc<dyn DeliveryHandler>,
    prefetch: u16,
    shutdown: CancellationToken,
) -> Result<(), lapin::Error> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consuming = Consuming::new(channel.clone(), &queues);
    for index in 0..consuming.queues.len() {
        consuming.consume(index).await?;
    }
    info!(queue = %queues.shared, partitions = queues.partitions.len(), prefetch, "consuming results");
    let mut in_flight = JoinSet::new();
    let mut look = tokio::time::interval(REBALANCE_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = consuming.streams.next() => match next {
                Some((index, Some(Ok(delivery)))) => {
                    consuming.delivered(index);
                    in_flight.spawn(process(handler.clone(), channel.clone(), delivery, shutdown.clone()));
                }
                Some((_, Some(Err(error)))) => break Err(error),
                Some((index, None)) => match consuming.ended(index).await {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(error) => break Err(error),
                },
                None => break Ok(()),
            },
            _ = look.tick() => {
                if let Err(error) = consuming.rebalance().await {
                    break Err(error);
                }
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    };
    consuming.cancel_all().await;
    while in_flight.join_next().await.is_some() {}
    if channel.status().connected() {
        let _ = channel.close(200, "consumer stopped".into()).await;
    }
    meter::partitions_active(0);
    info!("result consumer stopped");
    result
}
