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

use crate::amqp::publisher::Outgoing;
use crate::amqp::{self, Publisher};
use crate::store::Store;

/// Results of the floor measurements, per second.
#[derive(Debug, Clone, Default)]
pub struct Floor {
    pub cas_1: f64,
    pub cas_32: f64,
    pub publish_awaited: f64,
    pub publish_pipelined: f64,
    pub consume_ack: f64,
    pub combined_32: f64,
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
        .queue_delete(name.into(), QueueDeleteOptions::default())
        .await?;
    channel
        .queue_declare(name.into(), options, arguments)
        .await?;
    Ok(())
}

fn message(queue: &str) -> anyhow::Result<Outgoing> {
    let body = serde_json::json!({"task_id": "0".repeat(32), "job_id": "A".repeat(22), "outputs": {"csv_file": "x"}, "error": null});
    Ok(Outgoing::json("", queue, "stage-result", &body)?)
}

/// Persistent publishes per second to a quorum queue: awaiting each confirm, then pipelined.
pub async fn publish(
    url: &str,
    prefix: &str,
    duration: Duration,
) -> anyhow::Result<(f64, f64, f64)> {
    let connection = amqp::connect(url, "bench floor").await?;
    let channel = connection.create_channel().await?;
    let queue = format!("{prefix}.floor");
    scratch_queue(&channel, &queue).await?;
    let publisher = Publisher::open(&connection).await?;

    let started = Instant::now();
    let mut awaited = 0u64;
    while started.elapsed() < duration {
        publisher.publish(message(&queue)?).await?;
        awaited += 1;
    }
    let awaited_rate = awaited as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut pipelined = 0u64;
    while started.elapsed() < duration {
        let batch: Vec<Outgoing> = (0..500)
            .map(|_| message(&queue))
            .collect::<Result<_, _>>()?;
        publisher.publish_all(batch).await?;
        pipelined += 500;
    }
    let pipelined_rate = pipelined as f64 / started.elapsed().as_secs_f64();

    // Consume and ack what is queued.
    let total = awaited + pipelined;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.clone().into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut consumed = 0u64;
    while consumed < total && started.elapsed() < duration * 3 {
        match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                delivery.ack(BasicAckOptions::default()).await?;
                consumed += 1;
            }
            _ => break,
        }
    }
    let consume_rate = consumed as f64 / started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "bench".into()).await;
    Ok((awaited_rate, pipelined_rate, consume_rate))
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
    let input = format!("{prefix}.floor-in");
    let output = format!("{prefix}.floor-out");
    scratch_queue(&channel, &input).await?;
    scratch_queue(&channel, &output).await?;
    let publisher = Publisher::open(&connection).await?;
    let mut filled = 0;
    while filled < messages {
        let batch: Vec<Outgoing> = (0..500.min(messages - filled))
            .map(|_| message(&input))
            .collect::<Result<_, _>>()?;
        filled += batch.len() as u64;
        publisher.publish_all(batch).await?;
    }
    let collection = store.database().collection::<Document>("floor_combined");
    let _ = collection.drop().await;
    collection
        .insert_many((0..concurrency).map(job_like))
        .await?;

    channel
        .basic_qos(concurrency as u16, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            input.clone().into(),
            "combined".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let work = consumer
        .take(messages as usize)
        .for_each_concurrent(concurrency, |delivery| {
            let (collection, publisher, output, done) = (
                collection.clone(),
                publisher.clone(),
                output.clone(),
                done.clone(),
            );
            async move {
                let Ok(delivery) = delivery else { return };
                let n = (delivery.delivery_tag as usize) % concurrency;
                let id = format!("job-{n}");
                loop {
                    let Ok(Some(mut document)) = collection.find_one(doc! {"_id": &id}).await
                    else {
                        return;
                    };
                    let version = document.get_i64("version").unwrap_or(0);
                    document.insert("version", version + 1);
                    match collection
                        .replace_one(doc! {"_id": &id, "version": version}, document)
                        .await
                    {
                        Ok(result) if result.matched_count == 1 => break,
                        Ok(_) => continue,
                        Err(_) => return,
                    }
                }
                if let Ok(message) = message(&output)
                    && publisher.publish(message).await.is_ok()
                    && delivery.ack(BasicAckOptions::default()).await.is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    let _ = tokio::time::timeout(Duration::from_secs(120), work).await;
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    for queue in [input, output] {
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = collection.drop().await;
    let _ = connection.close(200, "bench".into()).await;
    Ok(rate)
}
