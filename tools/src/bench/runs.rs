//! The service measurements of `bench all`, each on a [`Cluster`] of its own.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use job_manager::config::Endpoints;
use job_manager::demo;

use super::cluster::Cluster;
pub use super::cluster::Setup;

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
    // Steady state: from the 10th to the 90th percent of the jobs archived, leaving out the
    // ramp-up (queues and caches filling) and the tail (the last jobs draining).
    let marks = [jobs as u64 / 10, jobs as u64 * 9 / 10];
    let outcome = run_load(&cluster, jobs, load, &marks).await;
    let latencies_ms = cluster.latency.take();
    cluster.stop().await;
    let reached = outcome?;
    let mut steady_jobs = (marks[1] - marks[0]) as f64;
    let mut seconds = (reached[1] - reached[0]).as_secs_f64();
    // A window too short to time (a `--quick` run's few jobs archived within one poll): time
    // the run from its start to the last mark instead.
    if seconds < 0.05 {
        steady_jobs = marks[1] as f64;
        seconds = reached[1].as_secs_f64().max(0.001);
    }
    Ok(Throughput {
        tasks_per_s: steady_jobs * 17.0 / seconds,
        jobs_per_s: steady_jobs / seconds,
        latencies_ms,
    })
}

/// Starts `jobs` seed-shaped jobs under `load` and waits for all of them; when each of `marks`
/// jobs were archived.
async fn run_load(
    cluster: &Cluster,
    jobs: usize,
    load: Load,
    marks: &[u64],
) -> anyhow::Result<Vec<Duration>> {
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
    let (limit, every) = (Duration::from_secs(600), Duration::from_millis(100));
    let waiting = cluster.wait_archived_marks(marks, limit, every);
    let (submitted, reached) = tokio::join!(submitting, waiting);
    submitted?;
    let reached = reached?;
    cluster
        .wait_archived_marks(&[jobs as u64], limit, every)
        .await?;
    Ok(reached)
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
