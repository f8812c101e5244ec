//! Replicas and no-op workers sharing one database and queue prefix, on the real broker and
//! database: in this process, or as `job-manager serve` processes whose memory is their own.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use job_manager::config::{Config, Endpoints};
use job_manager::demo;
use job_manager::store::Store;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::measure::status_kib;
use super::workers::{self, FAN_SINK, FAN_SOURCE, IDLE, Latency};
use crate::cleanup;

/// How a [`Cluster`] is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub replicas: usize,
    /// Outputs of the `fan-source` worker (the width of the wide stage).
    pub width: usize,
    /// The replicas' result prefetch.
    pub prefetch: u16,
    /// Run the replicas as child processes instead of inside this one.
    pub processes: bool,
    /// Serve the seed's workers with in-process no-op workers; `false` when something else
    /// serves them (the Python SDK's, `python.rs`).
    pub seed_workers: bool,
}

impl Setup {
    pub fn replicas(replicas: usize) -> Self {
        Self {
            replicas,
            width: 0,
            prefetch: Config::defaults().prefetch,
            processes: false,
            seed_workers: true,
        }
    }
}

/// Replicas and no-op workers sharing one database and queue prefix.
pub struct Cluster {
    pub bases: Vec<String>,
    pub client: reqwest::Client,
    pub store: Store,
    /// What the workers measured between stages.
    pub latency: Latency,
    config: Config,
    shutdown: CancellationToken,
    replicas: JoinSet<anyhow::Result<()>>,
    /// Replicas run as `job-manager serve` child processes, so their memory is their own.
    children: Vec<std::process::Child>,
    workers: JoinSet<()>,
}

/// The config of a cluster's replicas, with a database and prefix of its own.
fn config(endpoints: &Endpoints, setup: Setup) -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let mut config = Config::defaults();
    config.endpoints = endpoints.clone();
    config.database = format!("jm_bench_{id}");
    config.prefix = format!("jm-bench-{id}");
    config.sweep_interval_s = 2;
    config.prefetch = setup.prefetch;
    config
}

/// Starts `job-manager serve` with `config`.
fn spawn_replica(config: &Config) -> anyhow::Result<std::process::Child> {
    std::process::Command::new(crate::service_binary()?)
        .arg("serve")
        .env("JOB_MANAGER_AMQP_URL", &config.endpoints.amqp_url)
        .env("JOB_MANAGER_MONGODB_URI", &config.endpoints.mongodb_uri)
        .env("JOB_MANAGER_DATABASE", &config.database)
        .env("JOB_MANAGER_PREFIX", &config.prefix)
        .env("JOB_MANAGER_LISTEN", config.listen.to_string())
        .env("JOB_MANAGER_BASE_PATH", &config.base_path)
        .env("JOB_MANAGER_PREFETCH", config.prefetch.to_string())
        .env(
            "JOB_MANAGER_SWEEP_INTERVAL_S",
            config.sweep_interval_s.to_string(),
        )
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting a replica process")
}

/// Asks a child replica to stop (SIGTERM), and kills it if it has not within 15 s.
async fn stop_child(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The worker ids of every pipeline the benchmark registers.
fn worker_ids() -> Vec<&'static str> {
    let mut ids = demo::WORKERS.to_vec();
    ids.extend([FAN_SOURCE, FAN_SINK, IDLE]);
    ids
}

impl Cluster {
    pub async fn start(endpoints: &Endpoints, setup: Setup) -> anyhow::Result<Self> {
        let mut config = config(endpoints, setup);
        let shutdown = CancellationToken::new();
        let (mut replicas, mut children, mut bases) = (JoinSet::new(), Vec::new(), Vec::new());
        for _ in 0..setup.replicas.max(1) {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?;
            bases.push(format!("http://{address}{}", config.base_path));
            if setup.processes {
                drop(listener);
                config.listen = address;
                children.push(spawn_replica(&config)?);
            } else {
                let run = job_manager::app::run(config.clone(), listener, shutdown.clone());
                replicas.spawn(run);
            }
        }
        let latency = Latency::default();
        let mut served = vec![FAN_SOURCE, FAN_SINK];
        if setup.seed_workers {
            served.extend(demo::WORKERS);
        }
        let url = &endpoints.amqp_url;
        let workers = workers::spawn(
            url,
            &config.prefix,
            &served,
            setup.width,
            &latency,
            &shutdown,
        );
        let store = Store::connect(&config.endpoints.mongodb_uri, &config.database).await?;
        let cluster = Self {
            bases,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            store,
            latency,
            config,
            shutdown,
            replicas,
            children,
            workers,
        };
        let ready = async {
            cluster.wait_ready().await?;
            cluster.register().await
        };
        if let Err(error) = ready.await {
            cluster.stop().await;
            return Err(error);
        }
        Ok(cluster)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        for base in &self.bases {
            let started = Instant::now();
            while !self
                .client
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
        Ok(())
    }

    /// Registers the seed's pipeline, a wide one and an idle one, each with its machine.
    async fn register(&self) -> anyhow::Result<()> {
        let seed = format!("/pipelines/{}", demo::PIPELINE_ID);
        self.put(&seed, &demo::pipeline_body()).await?;
        let machine = json!({"pipeline_id": demo::PIPELINE_ID});
        self.put(&format!("/machines/{}", demo::MACHINE_ID), &machine)
            .await?;
        let field = |name: &str| json!({"name": name});
        let stage = |worker: &str, input: &str, output: Value, source: &str| {
            json!({"worker": {"id": worker, "name": worker,
                              "input": {"type": "single", "fields": [field(input)]},
                              "output": output},
                   "input_map": {input: source}})
        };
        let wide = json!({"id": "wide", "name": "wide", "stages": [
            stage(FAN_SOURCE, "file", json!({"type": "multiple", "fields": [field("item")]}), "init:init_source"),
            stage(FAN_SINK, "item", json!({"type": "single", "fields": []}), "item")]});
        let idle = json!({"id": "idle", "name": "idle", "stages": [
            stage(IDLE, "file", json!({"type": "single", "fields": []}), "init:init_source")]});
        for (id, pipeline) in [("wide", wide), ("idle", idle)] {
            self.put(&format!("/pipelines/{id}"), &pipeline).await?;
            self.put(&format!("/machines/{id}"), &json!({"pipeline_id": id}))
                .await?;
        }
        Ok(())
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.bases[0]);
        let response = self.client.put(url).json(body).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "PUT {path}: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The replicas' queue and exchange prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// The broker the replicas use.
    pub fn amqp_url(&self) -> &str {
        &self.config.endpoints.amqp_url
    }

    /// The peak and current RSS (KiB) of the child replica processes, summed.
    pub fn children_rss_kib(&self) -> (u64, u64) {
        self.children.iter().fold((0, 0), |(peak, now), child| {
            let status = format!("/proc/{}/status", child.id());
            (
                peak + status_kib(&status, "VmHWM:"),
                now + status_kib(&status, "VmRSS:"),
            )
        })
    }

    /// Stops the workers and replicas, and removes the cluster's queues, exchanges and database.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.workers.join_next().await.is_some() {}
        while self.replicas.join_next().await.is_some() {}
        for child in std::mem::take(&mut self.children) {
            stop_child(child).await;
        }
        let _ = self.store.database().drop().await;
        let url = &self.config.endpoints.amqp_url;
        cleanup::delete_topology(url, &self.config.prefix, &worker_ids()).await;
        self.store.shutdown().await;
    }
}
