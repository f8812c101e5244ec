//! job-manager itself under load: in-process replicas and no-op workers on the real broker and
//! database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::rss_kib;
use crate::amqp::Names;
use crate::config::{Config, Endpoints};
use crate::messages::StageDispatch;
use crate::store::Store;
use crate::worker::{self, WorkerOutput};
use crate::{chaos, demo};

/// Replicas and no-op workers sharing one database and queue prefix.
pub struct Cluster {
    pub bases: Vec<String>,
    amqp_url: String,
    pub store: Store,
    pub names: Names,
    client: reqwest::Client,
    shutdown: CancellationToken,
    replicas: JoinSet<anyhow::Result<()>>,
    workers: JoinSet<()>,
}

/// What the no-op workers return: the seed's shape for the demo workers; for the width test,
/// `fan-source` returns `width` outputs and `fan-sink` returns `null`.
fn outputs(dispatch: &StageDispatch, width: usize) -> Result<Value, String> {
    match dispatch.worker.id.as_str() {
        "fan-source" => Ok(Value::Array(
            (0..width).map(|i| json!({"item": i})).collect(),
        )),
        "fan-sink" | "idle" => Ok(Value::Null),
        _ => chaos::chaos_outputs(dispatch),
    }
}

impl Cluster {
    pub async fn start(
        endpoints: &Endpoints,
        replicas: usize,
        width: usize,
    ) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let mut config = Config::defaults();
        config.endpoints = endpoints.clone();
        config.database = format!("jm_bench_{id}");
        config.prefix = format!("jm-bench-{id}");
        config.sweep_interval_s = 1;
        let shutdown = CancellationToken::new();
        let mut set = JoinSet::new();
        let mut bases = Vec::new();
        for _ in 0..replicas.max(1) {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            bases.push(format!(
                "http://{}{}",
                listener.local_addr()?,
                config.base_path
            ));
            set.spawn(crate::app::run(config.clone(), listener, shutdown.clone()));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        for base in &bases {
            let started = Instant::now();
            while !client
                .get(format!("{base}/health/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(60),
                    "a replica did not become ready"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let names = Names::new(config.prefix.clone());
        let mut workers = JoinSet::new();
        for worker_id in demo::WORKERS.into_iter().chain(["fan-source", "fan-sink"]) {
            let (url, names, stop) = (endpoints.amqp_url.clone(), names.clone(), shutdown.clone());
            let handler = move |dispatch: StageDispatch| async move {
                outputs(&dispatch, width).map(WorkerOutput::new)
            };
            workers.spawn(async move {
                worker::serve(&url, &names, worker_id, 128, handler, stop).await
            });
        }
        let store = Store::connect(&config.endpoints.mongodb_uri, &config.database).await?;
        let cluster = Self {
            bases,
            amqp_url: endpoints.amqp_url.clone(),
            store,
            names,
            client,
            shutdown,
            replicas: set,
            workers,
        };
        cluster
            .put(
                &format!("/pipelines/{}", demo::PIPELINE_ID),
                &demo::pipeline_body(),
            )
            .await?;
        cluster
            .put(
                &format!("/machines/{}", demo::MACHINE_ID),
                &json!({"pipeline_id": demo::PIPELINE_ID}),
            )
            .await?;
        let field = |name: &str| json!({"name": name});
        let wide = json!({"id": "wide", "name": "wide", "stages": [
            {"worker": {"id": "fan-source", "name": "fan source", "input": {"type": "single", "fields": [field("file")]},
                        "output": {"type": "multiple", "fields": [field("item")]}},
             "input_map": {"file": "init:init_source"}},
            {"worker": {"id": "fan-sink", "name": "fan sink", "input": {"type": "single", "fields": [field("item")]},
                        "output": {"type": "single", "fields": []}},
             "input_map": {"item": "item"}}]});
        cluster.put("/pipelines/wide", &wide).await?;
        cluster
            .put("/machines/wide", &json!({"pipeline_id": "wide"}))
            .await?;
        let idle = json!({"id": "idle", "name": "idle", "stages": [
            {"worker": {"id": "idle-nobody-serves", "name": "idle", "input": {"type": "single", "fields": [field("file")]},
                        "output": {"type": "single", "fields": []}},
             "input_map": {"file": "init:init_source"}}]});
        cluster.put("/pipelines/idle", &idle).await?;
        cluster
            .put("/machines/idle", &json!({"pipeline_id": "idle"}))
            .await?;
        Ok(cluster)
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let response = self
            .client
            .put(format!("{}{path}", self.bases[0]))
            .json(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "PUT {path}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Starts `count` jobs on `machine`, `in_flight` requests at a time, spread over the replicas.
    pub async fn submit(
        &self,
        machine: &str,
        tag: &str,
        count: usize,
        in_flight: usize,
    ) -> anyhow::Result<()> {
        let next = Arc::new(AtomicU64::new(0));
        let mut set = JoinSet::new();
        for _ in 0..in_flight.max(1) {
            let (next, client, bases) = (next.clone(), self.client.clone(), self.bases.clone());
            let (machine, tag) = (machine.to_owned(), tag.to_owned());
            set.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= count {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let body = json!({"hash": format!("{tag}-{n}"), "machine_id": machine, "file_name": format!("f{n}")});
                    let base = &bases[n % bases.len()];
                    let response = client.post(format!("{base}/jobs")).json(&body).send().await?;
                    if response.status().as_u16() != 201 {
                        bail!("starting a job: {}", response.status());
                    }
                }
            });
        }
        while let Some(result) = set.join_next().await {
            result??;
        }
        Ok(())
    }

    /// Waits until `count` jobs are in history.
    pub async fn wait_archived(&self, count: u64, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let history = self.store.database().collection::<Document>("history");
        loop {
            if history.count_documents(doc! {}).await? >= count {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!(
                    "{} of {count} jobs archived after {limit:?}",
                    history.count_documents(doc! {}).await?
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The largest BSON size of a job document, sampled until `done` is cancelled.
    pub fn watch_document_size(&self, done: CancellationToken) -> tokio::task::JoinHandle<usize> {
        let jobs = self.store.database().collection::<Document>("jobs");
        tokio::spawn(async move {
            let mut largest = 0;
            while !done.is_cancelled() {
                if let Ok(Some(document)) = jobs.find_one(doc! {}).await
                    && let Ok(bytes) = mongodb::bson::to_vec(&document)
                {
                    largest = largest.max(bytes.len());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            largest
        })
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.workers.join_next().await.is_some() {}
        while self.replicas.join_next().await.is_some() {}
        let _ = self.store.database().drop().await;
        if let Ok(connection) = crate::amqp::connect(&self.amqp_url, "bench cleanup").await
            && let Ok(channel) = connection.create_channel().await
        {
            let mut workers = demo::WORKERS.to_vec();
            workers.extend(["fan-source", "fan-sink", "idle-nobody-serves"]);
            crate::amqp::topology::delete(&channel, &self.names, &workers).await;
            let _ = connection.close(200, "bench".into()).await;
        }
        self.store.shutdown().await;
    }
}

/// Throughput on the seed's shape (17 tasks a job).
pub struct Throughput {
    pub tasks_per_s: f64,
    pub jobs_per_s: f64,
    pub latencies_ms: Vec<f64>,
}

/// Runs `jobs` seed-shaped jobs on `replicas` replicas.
pub async fn throughput(
    endpoints: &Endpoints,
    replicas: usize,
    jobs: usize,
) -> anyhow::Result<Throughput> {
    let cluster = Cluster::start(endpoints, replicas, 0)
        .await
        .context("starting the replicas")?;
    crate::meter::collect_latencies(true);
    let started = Instant::now();
    let outcome = async {
        cluster.submit(demo::MACHINE_ID, "tp", jobs, 32).await?;
        cluster
            .wait_archived(jobs as u64, Duration::from_secs(600))
            .await
    }
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let latencies_ms = crate::meter::take_latencies()
        .into_iter()
        .map(|s| s * 1000.0)
        .collect();
    crate::meter::collect_latencies(false);
    cluster.stop().await;
    outcome?;
    Ok(Throughput {
        tasks_per_s: (jobs * 17) as f64 / elapsed,
        jobs_per_s: jobs as f64 / elapsed,
        latencies_ms,
    })
}

/// Seconds for one seed-shaped job running alone.
pub async fn single_job(endpoints: &Endpoints) -> anyhow::Result<f64> {
    let cluster = Cluster::start(endpoints, 1, 0).await?;
    let started = Instant::now();
    let outcome = async {
        cluster.submit(demo::MACHINE_ID, "alone", 1, 1).await?;
        cluster.wait_archived(1, Duration::from_secs(60)).await
    }
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    cluster.stop().await;
    outcome?;
    Ok(elapsed)
}

/// One job whose second stage fans out to `width` tasks: seconds, peak RSS (KiB) and the
/// largest job document (bytes).
pub async fn width(
    endpoints: &Endpoints,
    width: usize,
    limit: Duration,
) -> anyhow::Result<(Option<f64>, u64, usize)> {
    let cluster = Cluster::start(endpoints, 1, width).await?;
    let peak = super::PeakRss::start(Duration::from_millis(20));
    let sampling = CancellationToken::new();
    let sizes = cluster.watch_document_size(sampling.clone());
    let started = Instant::now();
    let outcome = async {
        cluster.submit("wide", "wide", 1, 1).await?;
        cluster.wait_archived(1, limit).await
    }
    .await;
    let elapsed = outcome.is_ok().then(|| started.elapsed().as_secs_f64());
    sampling.cancel();
    let peak = peak.finish().await;
    let largest = sizes.await.unwrap_or(0);
    cluster.stop().await;
    Ok((elapsed, peak, largest))
}

/// RSS (KiB) of the process before and after `count` jobs are active and waiting on a worker
/// that nobody serves.
pub async fn idle_jobs(endpoints: &Endpoints, count: usize) -> anyhow::Result<(u64, u64)> {
    let cluster = Cluster::start(endpoints, 1, 0).await?;
    let before = rss_kib();
    let outcome = cluster.submit("idle", "idle", count, 32).await;
    let after = rss_kib();
    let active = cluster.store.count_active().await.unwrap_or(0);
    cluster.stop().await;
    outcome?;
    anyhow::ensure!(
        active as usize >= count,
        "only {active} of {count} jobs were active"
    );
    Ok((before, after))
}
