//! One job at a time, many times: from `POST /jobs` answered to the job's `job.finished` event,
//! as a client that waits on the events exchange sees it. The first run, on a fresh replica, is
//! reported apart as the cold one. The seed's workers are the in-process Rust no-op workers, or
//! the Python SDK's (`python_jobs_alone`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use job_manager::amqp::Names;
use job_manager::config::Endpoints;
use job_manager::demo;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::cluster::Cluster;
use super::python::{Interpreter, PythonWorkers};
use super::runs::Setup;

/// How long one job may take before the run is given up.
const LIMIT: Duration = Duration::from_secs(30);

/// Milliseconds each job took, the cold one apart.
pub struct Alone {
    pub cold_ms: f64,
    pub warm_ms: Vec<f64>,
}

/// Runs `runs` seed-shaped jobs one after another on one in-process replica.
pub async fn jobs_alone(endpoints: &Endpoints, runs: usize) -> anyhow::Result<Alone> {
    let cluster = Cluster::start(endpoints, Setup::replicas(1)).await?;
    let outcome = measure(&cluster, runs.max(2)).await;
    cluster.stop().await;
    outcome
}

/// The same runs with the seed's workers served by the Python SDK (`python.rs`), each worker id
/// running up to `concurrency` handlers at once. The Python process is stopped before the
/// cluster removes its queues, and killed if anything fails on the way.
pub async fn python_jobs_alone(
    endpoints: &Endpoints,
    runs: usize,
    interpreter: &Interpreter,
    concurrency: usize,
) -> anyhow::Result<Alone> {
    let setup = Setup {
        seed_workers: false,
        ..Setup::replicas(1)
    };
    let cluster = Cluster::start(endpoints, setup).await?;
    let outcome = async {
        let (url, prefix) = (cluster.amqp_url(), cluster.prefix());
        let mut workers = PythonWorkers::spawn(interpreter, url, prefix, concurrency)?;
        workers.wait_consuming(url, prefix, &demo::WORKERS).await?;
        let alone = measure(&cluster, runs.max(2)).await;
        workers.stop().await;
        alone
    }
    .await;
    cluster.stop().await;
    outcome
}

async fn measure(cluster: &Cluster, runs: usize) -> anyhow::Result<Alone> {
    let names = Names::new(cluster.prefix());
    let connection = job_manager::amqp::connect(cluster.amqp_url(), "bench alone").await?;
    let channel = connection.create_channel().await?;
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare("".into(), private, FieldTable::default())
        .await?;
    let (exchange, key) = (names.events_exchange(), "job.finished");
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            key.into(),
            bind,
            FieldTable::default(),
        )
        .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut events = channel
        .basic_consume(
            queue.name().clone(),
            "bench-alone".into(),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    let mut times = Vec::with_capacity(runs);
    for n in 0..runs {
        let id = cluster
            .start_one(demo::MACHINE_ID, &format!("alone-{n}"))
            .await?;
        let started = Instant::now();
        let finished = async {
            while let Some(delivery) = events.next().await {
                let event: serde_json::Value = serde_json::from_slice(&delivery?.data)?;
                if event["job_id"] == id.as_str() {
                    return Ok::<_, anyhow::Error>(());
                }
            }
            anyhow::bail!("the events consumer ended")
        };
        tokio::time::timeout(LIMIT, finished).await??;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = connection.close(200, "done".into()).await;
    let cold_ms = times.remove(0);
    Ok(Alone {
        cold_ms,
        warm_ms: times,
    })
}
