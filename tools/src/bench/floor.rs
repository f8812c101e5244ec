//! The floor of this machine: what MongoDB and RabbitMQ alone sustain, measured by the same
//! program just before job-manager runs, so the ratios compare like with like.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use mongodb::bson::{Document, doc};
use tokio::task::JoinSet;

use job_manager::amqp::publisher::Outgoing;
use job_manager::amqp::{self, Publisher};
use job_manager::store::Store;

/// What the broker alone sustains, per second.
#[derive(Debug, Clone, Copy)]
pub struct Broker {
    /// Persistent publishes, each confirm awaited before the next publish.
    pub awaited: f64,
    /// Persistent publishes, confirms awaited per batch of 500.
    pub pipelined: f64,
    /// Consumes with an ack each.
    pub consume_ack: f64,
}

fn job_like(n: usize) -> Document {
    // About 4 KB, shaped like a job: nested stages with small objects.
    let outputs: Vec<Document> = (0..24)
        .map(|i| doc! {"unique_id": format!("sensor-{i:02}"), "result_table": format!("{:032x}", i * 7919 + n)})
        .collect();
    doc! {"_id": format!("job-{n}"), "version": 0_i64, "status": "running",
    "stages": [{"id": "03", "outputs": outputs}], "pad": "x".repeat(1500)}
}

/// Load + compare-and-set cycles per second at `concurrency`, each worker on its own document.
pub async fn cas(store: &Store, concurrency: usize, duration: Duration) -> anyhow::Result<f64> {
    let collection = store
        .database()
        .collection::<Document>(&format!("floor_cas_{concurrency}"));
    let _ = collection.drop().await;
    collection
        .insert_many((0..concurrency).map(job_like))
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for n in 0..concurrency {
        let (collection, done) = (collection.clone(), done.clone());
        set.spawn(async move {
            let id = format!("job-{n}");
            while started.elapsed() < duration {
                let Some(mut document) = collection.find_one(doc! {"_id": &id}).await? else {
                    break;
                };
                let version = document.get_i64("version").unwrap_or(0);
                document.insert("version", version + 1);
                let result = collection
                    .replace_one(doc! {"_id": &id, "version": version}, document)
                    .await?;
                if result.matched_count == 1 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = set.join_next().await {
        result??;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let _ = collection.drop().await;
    Ok(rate)
}

/// A queue name of its own for one measurement, so no measurement starts from a queue an earlier
/// one left (or is still deleting).
fn scratch_name(prefix: &str, what: &str) -> String {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}.{what}-{}", &unique[..8])
}

async fn scratch_queue(channel: &lapin::Channel, name: &str) -> anyhow::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(name.into(), options, arguments)
        .await?;
    Ok(())
}

/// Consumes `queue` with manual acks, `prefetch` at a time.
async fn consume(
    channel: &lapin::Channel,
    queue: &str,
    prefetch: u16,
) -> anyhow::Result<lapin::Consumer> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}

fn message(queue: &str) -> anyhow::Result<Outgoing> {
    let body = serde_json::json!({"task_id": "0".repeat(32), "job_id": "A".repeat(22), "outputs": {"csv_file": "x"}, "error": null});
    Ok(Outgoing::json("", queue, "stage-result", &body)?)
}

/// Persistent publishes per second to a quorum queue (awaiting each confirm, then pipelined),
/// then consumes and acks per second of what they queued.
pub async fn publish(url: &str, prefix: &str, duration: Duration) -> anyhow::Result<Broker> {
    let connection = amqp::connect(url, "bench floor").await?;
    let channel = connection.create_channel().await?;
    let queue = scratch_name(prefix, "floor");
    scratch_queue(&channel, &queue).await?;
    let measured = async {
        let publisher = Publisher::open(&connection).await?;
        let (awaited, awaited_rate) = publish_awaited(&publisher, &queue, duration).await?;
        let (pipelined, pipelined_rate) = publish_pipelined(&publisher, &queue, duration).await?;
        let consume_rate = consume_ack(&channel, &queue, awaited + pipelined, duration * 3).await?;
        Ok::<_, anyhow::Error>(Broker {
            awaited: awaited_rate,
            pipelined: pipelined_rate,
            consume_ack: consume_rate,
        })
    }
    .await;
    let _ = connection.close(200, "bench".into()).await;
    delete_scratch(url, &[queue]).await;
    measured
}

/// Deletes the scratch `queues` on a connection of its own, once the measuring one is closed:
/// RabbitMQ 3.10 crashes a channel whose consumer is cancelled after its queue was deleted
/// (the connection closes with INTERNAL_ERROR, 541), and the broker may have closed the
/// measuring connection anyway. So a run leaves no queue behind.
async fn delete_scratch(url: &str, queues: &[String]) {
    let Ok(connection) = amqp::connect(url, "bench cleanup").await else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "bench cleanup".into()).await;
}

/// Publishes for `duration`, one confirm at a time: how many, and how many per second.
async fn publish_awaited(
    publisher: &Publisher,
    queue: &str,
    duration: Duration,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut published = 0u64;
    while started.elapsed() < duration {
        publisher.publish(message(queue)?).await?;
        published += 1;
    }
    Ok((
        published,
        published as f64 / started.elapsed().as_secs_f64(),
    ))
}

/// Publishes for `duration` in batches of 500 with their confirms awaited together.
async fn publish_pipelined(
    publisher: &Publisher,
    queue: &str,
    duration: Duration,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut published = 0u64;
    while started.elapsed() < duration {
        let batch: Vec<Outgoing> = (0..500).map(|_| message(queue)).collect::<Result<_, _>>()?;
        publisher.publish_all(batch).await?;
        published += 500;
    }
    Ok((
        published,
        published as f64 / started.elapsed().as_secs_f64(),
    ))
}

/// Consumes and acks up to `total` messages of `queue` for at most `limit`: per second.
async fn consume_ack(
    channel: &lapin::Channel,
    queue: &str,
    total: u64,
    limit: Duration,
) -> anyhow::Result<f64> {
    let mut consumer = consume(channel, queue, 256).await?;
    let started = Instant::now();
    let mut consumed = 0u64;
    while consumed < total && started.elapsed() < limit {
        match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                delivery.ack(BasicAckOptions::default()).await?;
                consumed += 1;
            }
            _ => break,
        }
    }
    Ok(consumed as f64 / started.elapsed().as_secs_f64())
}

/// The per-task loop of a coordinator at `concurrency`: consume, load + compare-and-set,
/// publish with a confirm, ack.
pub async fn combined(
    url: &str,
    prefix: &str,
    store: &Store,
    concurrency: usize,
    messages: u64,
) -> anyhow::Result<f64> {
    let connection = amqp::connect(url, "bench combined").await?;
    let channel = connection.create_channel().await?;
    let (input, output) = (
        scratch_name(prefix, "floor-in"),
        scratch_name(prefix, "floor-out"),
    );
    let collection = store.database().collection::<Document>("floor_combined");
    let measured = async {
        scratch_queue(&channel, &input).await?;
        scratch_queue(&channel, &output).await?;
        let publisher = Publisher::open(&connection).await?;
        fill(&publisher, &input, messages).await?;
        let _ = collection.drop().await;
        collection
            .insert_many((0..concurrency).map(job_like))
            .await?;
        let consumer = consume(&channel, &input, concurrency as u16).await?;
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let work = consumer
            .take(messages as usize)
            .for_each_concurrent(concurrency, |delivery| {
                let step = Step {
                    collection: collection.clone(),
                    publisher: publisher.clone(),
                    output: output.clone(),
                    done: done.clone(),
                    concurrency,
                };
                async move {
                    if let Ok(delivery) = delivery {
                        step.run(delivery).await;
                    }
                }
            });
        let _ = tokio::time::timeout(Duration::from_secs(120), work).await;
        Ok::<_, anyhow::Error>(
            done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        )
    }
    .await;
    let _ = connection.close(200, "bench".into()).await;
    delete_scratch(url, &[input, output]).await;
    let _ = collection.drop().await;
    measured
}

/// Queues `messages` messages on `queue`, 500 confirms at a time.
async fn fill(publisher: &Publisher, queue: &str, messages: u64) -> anyhow::Result<()> {
    let mut filled = 0;
    while filled < messages {
        let batch: Vec<Outgoing> = (0..500.min(messages - filled))
            .map(|_| message(queue))
            .collect::<Result<_, _>>()?;
        filled += batch.len() as u64;
        publisher.publish_all(batch).await?;
    }
    Ok(())
}

/// One task of the combined loop.
struct Step {
    collection: mongodb::Collection<Document>,
    publisher: Publisher,
    output: String,
    done: Arc<AtomicU64>,
    concurrency: usize,
}

impl Step {
    /// Load + compare-and-set (again after a lost race), publish with a confirm, ack.
    async fn run(self, delivery: lapin::message::Delivery) {
        let n = (delivery.delivery_tag as usize) % self.concurrency;
        let id = format!("job-{n}");
        loop {
            let Ok(Some(mut document)) = self.collection.find_one(doc! {"_id": &id}).await else {
                return;
            };
            let version = document.get_i64("version").unwrap_or(0);
            document.insert("version", version + 1);
            let filter = doc! {"_id": &id, "version": version};
            match self.collection.replace_one(filter, document).await {
                Ok(result) if result.matched_count == 1 => break,
                Ok(_) => continue,
                Err(_) => return,
            }
        }
        if let Ok(message) = message(&self.output)
            && self.publisher.publish(message).await.is_ok()
            && delivery.ack(BasicAckOptions::default()).await.is_ok()
        {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
