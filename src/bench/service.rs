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
    /// Replicas run as `job-manager serve` child processes, so their memory is their own.
    children: Vec<std::process::Child>,
    workers: JoinSet<()>,
}

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
}

impl Setup {
    pub fn replicas(replicas: usize) -> Self {
        Self {
            replicas,
            width: 0,
            prefetch: Config::defaults().prefetch,
            processes: false,
        }
    }
}

/// Starts `job-manager serve` (this very binary) with `config`.
fn spawn_replica(config: &Config) -> anyhow::Result<std::process::Child> {
    let exe = std::env::current_exe().context("finding this binary")?;
    std::process::Command::new(exe)
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
    pub async fn start(endpoints: &Endpoints, setup: Setup) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let width = setup.width;
        let mut config = Config::defaults();
        config.endpoints = endpoints.clone();
        config.database = format!("jm_bench_{id}");
        config.prefix = format!("jm-bench-{id}");
        config.sweep_interval_s = 2;
        config.prefetch = setup.prefetch;
        let shutdown = CancellationToken::new();
        let mut set = JoinSet::new();
        let mut children = Vec::new();
        let mut bases = Vec::new();
        for _ in 0..setup.replicas.max(1) {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?;
            bases.push(format!("http://{address}{}", config.base_path));
            if setup.processes {
                drop(listener);
                config.listen = address;
                children.push(spawn_replica(&config)?);
            } else {
                set.spawn(crate::app::run(config.clone(), listener, shutdown.clone()));
            }
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
            children,
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

    /// Starts job number `n` on `machine`, on one of the replicas in turn.
    async fn start_job(
        client: &reqwest::Client,
        bases: &[String],
        machine: &str,
        tag: &str,
        n: usize,
    ) -> anyhow::Result<()> {
        let body = json!({"hash": format!("{tag}-{n}"), "machine_id": machine, "file_name": format!("f{n}")});
        let base = &bases[n % bases.len()];
        let response = client
            .post(format!("{base}/jobs"))
            .json(&body)
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!("starting a job: {}", response.status());
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
                    Self::start_job(&client, &bases, &machine, &tag, n).await?;
                }
            });
        }
        while let Some(result) = set.join_next().await {
            result??;
        }
        Ok(())
    }

    /// Starts `count` jobs on `machine` at a steady `per_s`, whatever the replies take (an open
    /// loop, as independent clients would).
    pub async fn submit_paced(
        &self,
        machine: &str,
        tag: &str,
        count: usize,
        per_s: f64,
    ) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s.max(0.01)));
        let mut set = JoinSet::new();
        for n in 0..count {
            ticker.tick().await;
            let (client, bases) = (self.client.clone(), self.bases.clone());
            let (machine, tag) = (machine.to_owned(), tag.to_owned());
            set.spawn(async move { Self::start_job(&client, &bases, &machine, &tag, n).await });
        }
        while let Some(result) = set.join_next().await {
            result??;
        }
        Ok(())
    }

    /// Waits until `count` jobs are in history, looking every 20 ms.
    pub async fn wait_archived(&self, count: u64, limit: Duration) -> anyhow::Result<Duration> {
        let every = Duration::from_millis(20);
        let marks = self.wait_archived_marks(&[count], limit, every).await?;
        Ok(marks[0])
    }

    /// Waits until each count of `marks` (ascending) is in history, looking `every` so often;
    /// the time each was reached.
    pub async fn wait_archived_marks(
        &self,
        marks: &[u64],
        limit: Duration,
        every: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let started = Instant::now();
        let history = self.store.database().collection::<Document>("history");
        let mut reached = Vec::with_capacity(marks.len());
        while reached.len() < marks.len() {
            let archived = history.count_documents(doc! {}).await?;
            while reached.len() < marks.len() && archived >= marks[reached.len()] {
                reached.push(started.elapsed());
            }
            if reached.len() == marks.len() {
                break;
            }
            if started.elapsed() > limit {
                bail!(
                    "{archived} of {} jobs archived after {limit:?}",
                    marks[marks.len() - 1]
                );
            }
            tokio::time::sleep(every).await;
        }
        Ok(reached)
    }

    /// The BSON size of the largest history record: a job's document is largest when it
    /// ends, and that is what is archived.
    pub async fn largest_record(&self) -> anyhow::Result<usize> {
        let history = self
            .store
            .database()
            .collection::<mongodb::bson::RawDocumentBuf>("history");
        let mut cursor = history.find(doc! {}).await?;
        let mut largest = 0;
        while cursor.advance().await? {
            largest = largest.max(cursor.current().as_bytes().len());
        }
        Ok(largest)
    }

    /// The peak and current RSS (KiB) of the child replica processes, summed.
    pub fn children_rss_kib(&self) -> (u64, u64) {
        self.children.iter().fold((0, 0), |(peak, now), child| {
            let status = format!("/proc/{}/status", child.id());
            (
                peak + super::status_kib(&status, "VmHWM:"),
                now + super::status_kib(&status, "VmRSS:"),
            )
        })
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.workers.join_next().await.is_some() {}
        while self.replicas.join_next().await.is_some() {}
        for child in std::mem::take(&mut self.children) {
            stop_child(child).await;
        }
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

/// How seed-shaped jobs are started.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// As fast as they are taken, `in_flight` requests at a time: the maximum throughput.
    Saturate { in_flight: usize },
    /// At a steady rate of jobs per second.
    Paced { jobs_per_s: f64 },
}

/// Runs `jobs` seed-shaped jobs on the cluster `setup` describes.
pub async fn throughput(
    endpoints: &Endpoints,
    setup: Setup,
    jobs: usize,
    load: Load,
) -> anyhow::Result<Throughput> {
    let cluster = Cluster::start(endpoints, setup)
        .await
        .context("starting the replicas")?;
    crate::meter::collect_latencies(true);
    // Steady state: from the 10th to the 90th percent of the jobs archived, leaving out the
    // ramp-up (queues and caches filling) and the tail (the last jobs draining).
    let marks = [jobs as u64 / 10, jobs as u64 * 9 / 10];
    let outcome = async {
        let submitting = async {
            match load {
                Load::Saturate { in_flight } => {
                    cluster
                        .submit(demo::MACHINE_ID, "tp", jobs, in_flight)
                        .await
                }
                Load::Paced { jobs_per_s } => {
                    cluster
                        .submit_paced(demo::MACHINE_ID, "paced", jobs, jobs_per_s)
                        .await
                }
            }
        };
        // Counting history takes the database's time too; under load, look only so often.
        let waiting = cluster.wait_archived_marks(
            &marks,
            Duration::from_secs(600),
            Duration::from_millis(100),
        );
        let (submitted, reached) = tokio::join!(submitting, waiting);
        submitted?;
        let reached = reached?;
        cluster
            .wait_archived_marks(
                &[jobs as u64],
                Duration::from_secs(600),
                Duration::from_millis(100),
            )
            .await?;
        Ok::<_, anyhow::Error>(reached)
    }
    .await;
    let latencies_ms = crate::meter::take_latencies()
        .into_iter()
        .map(|s| s * 1000.0)
        .collect();
    crate::meter::collect_latencies(false);
    cluster.stop().await;
    let reached = outcome?;
    let steady_jobs = (marks[1] - marks[0]) as f64;
    let seconds = (reached[1] - reached[0])
        .as_secs_f64()
        .max(f64::MIN_POSITIVE);
    Ok(Throughput {
        tasks_per_s: steady_jobs * 17.0 / seconds,
        jobs_per_s: steady_jobs / seconds,
        latencies_ms,
    })
}

/// Seconds for one seed-shaped job running alone.
pub async fn single_job(endpoints: &Endpoints) -> anyhow::Result<f64> {
    let cluster = Cluster::start(endpoints, Setup::replicas(1)).await?;
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

/// What one wide job came to.
pub struct Wide {
    /// Seconds to finish, or `None` when it did not within the limit.
    pub seconds: Option<f64>,
    /// Peak RSS of the replica process, KiB.
    pub peak_kib: u64,
    /// The largest job document seen, bytes.
    pub document_bytes: usize,
}

/// One job whose second stage fans out to `width` tasks, on one replica in a process of its own.
pub async fn width(endpoints: &Endpoints, width: usize, limit: Duration) -> anyhow::Result<Wide> {
    let setup = Setup {
        width,
        processes: true,
        ..Setup::replicas(1)
    };
    let cluster = Cluster::start(endpoints, setup).await?;
    let started = Instant::now();
    let outcome = async {
        cluster.submit("wide", "wide", 1, 1).await?;
        cluster.wait_archived(1, limit).await
    }
    .await;
    let seconds = outcome.is_ok().then(|| started.elapsed().as_secs_f64());
    let (peak_kib, _) = cluster.children_rss_kib();
    let document_bytes = cluster.largest_record().await.unwrap_or(0);
    cluster.stop().await;
    Ok(Wide {
        seconds,
        peak_kib,
        document_bytes,
    })
}

/// RSS (KiB) of a replica process before and after `count` jobs are active and waiting on a
/// worker that nobody serves, and its peak meanwhile.
pub async fn idle_jobs(endpoints: &Endpoints, count: usize) -> anyhow::Result<(u64, u64, u64)> {
    let setup = Setup {
        processes: true,
        ..Setup::replicas(1)
    };
    let cluster = Cluster::start(endpoints, setup).await?;
    let (_, before) = cluster.children_rss_kib();
    let outcome = cluster.submit("idle", "idle", count, 32).await;
    // Let the sweep pass over them at least once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (peak, after) = cluster.children_rss_kib();
    let active = cluster.store.count_active().await.unwrap_or(0);
    cluster.stop().await;
    outcome?;
    anyhow::ensure!(
        active as usize >= count,
        "only {active} of {count} jobs were active"
    );
    Ok((before, after, peak))
}
