//! `job-manager bench`: measurements that print figures. Speed and memory targets live here,
//! never in timed tests.

pub mod floor;
pub mod queries;
pub mod service;

use clap::Subcommand;

/// What to measure.
#[derive(Debug, Clone, Subcommand)]
pub enum Bench {
    /// Listing jobs over a large history: first-page latency and memory while streaming.
    Queries(queries::QueryBenchArgs),
    /// The machine's floor, job-manager's throughput and latency, replicas, width and memory.
    All(AllArgs),
    /// Only the wide-stage runs of `all` (section d), e.g. under a profiler.
    Width(WidthArgs),
}

/// Options of `job-manager bench width`.
#[derive(Debug, Clone, clap::Args)]
pub struct WidthArgs {
    #[command(flatten)]
    pub endpoints: crate::config::Endpoints,
    /// Widths of the wide stage (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub width: Vec<usize>,
    /// Seconds a run may take before it is reported as unfinished.
    #[arg(long, default_value_t = 300)]
    pub width_limit_s: u64,
}

/// Options of `job-manager bench all`.
#[derive(Debug, Clone, clap::Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub endpoints: crate::config::Endpoints,
    /// Seed-shaped jobs per throughput run (throughput counts the 10th to the 90th percent).
    #[arg(long, default_value_t = 600)]
    pub jobs: usize,
    /// Width of the wide-stage runs (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub width: Vec<usize>,
    /// Seconds a wide-stage run may take before it is reported as unfinished.
    #[arg(long, default_value_t = 300)]
    pub width_limit_s: u64,
    /// Result prefetch values to compare (a shorter run each).
    #[arg(long, value_delimiter = ',', default_value = "8,64,256")]
    pub prefetch: Vec<u16>,
    /// Active jobs for the memory run.
    #[arg(long, default_value_t = 10_000)]
    pub idle_jobs: usize,
    /// Seconds of each floor measurement.
    #[arg(long, default_value_t = 3)]
    pub floor_s: u64,
    /// Small sizes everywhere: checks that the benchmark runs, not how fast.
    #[arg(long)]
    pub quick: bool,
}

/// Runs the chosen benchmark.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Queries(args) => queries::run(args).await,
        Bench::All(args) => all(args).await,
        Bench::Width(args) => {
            let rows = width_rows(&args.endpoints, &args.width, args.width_limit_s).await?;
            print_table(rows);
            Ok(())
        }
    }
}

/// Section (d): one row per width.
async fn width_rows(
    e: &crate::config::Endpoints,
    widths: &[usize],
    limit_s: u64,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    for width in widths {
        let wide = service::width(e, *width, std::time::Duration::from_secs(limit_s)).await?;
        let time = wide
            .seconds
            .map_or(format!("did not finish within {limit_s} s"), |s| {
                format!("{s:.1} s")
            });
        rows.push((
            format!("(d) one stage {width} wide"),
            format!(
                "{time}, replica peak RSS {:.0} MiB, job document {:.2} MiB",
                wide.peak_kib as f64 / 1024.0,
                wide.document_bytes as f64 / 1024.0 / 1024.0
            ),
        ));
    }
    Ok(rows)
}

fn print_table(rows: Vec<(String, String)>) {
    println!("| measurement | value |");
    println!("|---|---|");
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
}

async fn all(mut args: AllArgs) -> anyhow::Result<()> {
    use std::time::Duration;
    if args.quick {
        args.jobs = 20;
        args.width = vec![50];
        args.idle_jobs = 50;
        args.prefetch = vec![64];
        args.floor_s = 1;
    }
    let e = &args.endpoints;
    let floor_time = Duration::from_secs(args.floor_s);
    let store = crate::store::Store::connect(
        &e.mongodb_uri,
        &format!("jm_bench_floor_{}", uuid::Uuid::new_v4().simple()),
    )
    .await?;
    let prefix = format!(
        "jm-bench-floor-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    eprintln!("bench: measuring the floor");
    let cas_1 = floor::cas(&store, 1, floor_time).await?;
    let cas_32 = floor::cas(&store, 32, floor_time).await?;
    let (publish_awaited, publish_pipelined, consume_ack) =
        floor::publish(&e.amqp_url, &prefix, floor_time).await?;
    let combined_messages = if args.quick { 500 } else { 5_000 };
    let combined_32 = floor::combined(&e.amqp_url, &prefix, &store, 32, combined_messages).await?;
    let _ = store.database().drop().await;
    store.shutdown().await;

    let mut rows: Vec<(String, String)> = vec![
        (
            "(a) load + compare-and-set of a 4 KB document, concurrency 1".into(),
            format!("{cas_1:.0} /s"),
        ),
        (
            "(a) load + compare-and-set, concurrency 32".into(),
            format!("{cas_32:.0} /s"),
        ),
        (
            "(a) persistent publish, confirm awaited one by one".into(),
            format!("{publish_awaited:.0} /s"),
        ),
        (
            "(a) persistent publish, confirms pipelined".into(),
            format!("{publish_pipelined:.0} /s"),
        ),
        ("(a) consume + ack".into(), format!("{consume_ack:.0} /s")),
        (
            "(a) combined per-task loop, concurrency 32".into(),
            format!("{combined_32:.0} tasks/s"),
        ),
    ];

    eprintln!("bench: job-manager on the seed's shape");
    use service::{Load, Setup};
    let saturate = Load::Saturate { in_flight: 32 };
    let mut per_replicas = Vec::new();
    for replicas in 1..=3 {
        let run = service::throughput(e, Setup::replicas(replicas), args.jobs, saturate).await?;
        per_replicas.push(run);
    }
    let one = &mut per_replicas[0];
    let p50 = quantile(&mut one.latencies_ms, 0.5);
    let p99 = quantile(&mut one.latencies_ms, 0.99);
    rows.push((
        "(b) tasks/s, 1 replica".into(),
        format!("{:.0}", one.tasks_per_s),
    ));
    rows.push((
        "(b) jobs/s, 1 replica".into(),
        format!("{:.1}", one.jobs_per_s),
    ));
    rows.push((
        "(b) result consumed → next dispatch confirmed, p50 / p99".into(),
        format!(
            "{p50:.1} ms / {p99:.1} ms ({} samples)",
            one.latencies_ms.len()
        ),
    ));
    // Half of the maximum, as a steady arrival rate, for as long as the maximum run took.
    let half = one.jobs_per_s / 2.0;
    let mut paced = service::throughput(
        e,
        Setup::replicas(1),
        args.jobs / 2,
        Load::Paced { jobs_per_s: half },
    )
    .await?;
    rows.push((
        format!("(b) p50 / p99 at half load ({half:.1} jobs/s arriving)"),
        format!(
            "{:.1} ms / {:.1} ms ({} samples)",
            quantile(&mut paced.latencies_ms, 0.5),
            quantile(&mut paced.latencies_ms, 0.99),
            paced.latencies_ms.len()
        ),
    ));
    let alone = service::single_job(e).await?;
    rows.push((
        "(b) one job alone, end to end".into(),
        format!("{:.0} ms", alone * 1000.0),
    ));
    for prefetch in &args.prefetch {
        let setup = Setup {
            prefetch: *prefetch,
            ..Setup::replicas(1)
        };
        let run = service::throughput(e, setup, args.jobs, saturate).await?;
        rows.push((
            format!("(b) tasks/s with result prefetch {prefetch}"),
            format!("{:.0}", run.tasks_per_s),
        ));
    }
    for (i, run) in per_replicas.iter().enumerate() {
        rows.push((
            format!("(c) tasks/s, {} replica(s)", i + 1),
            format!("{:.0}", run.tasks_per_s),
        ));
    }
    eprintln!("bench: wide stages");
    rows.extend(width_rows(e, &args.width, args.width_limit_s).await?);
    eprintln!("bench: memory with many active jobs");
    let (before, after, peak) = service::idle_jobs(e, args.idle_jobs).await?;
    rows.push((
        format!("(e) replica RSS with {} active jobs", args.idle_jobs),
        format!(
            "{:.0} MiB (idle before: {:.0} MiB, peak while starting them: {:.0} MiB)",
            after as f64 / 1024.0,
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
    ));

    let ratio_floor = per_replicas[0].tasks_per_s / combined_32.max(f64::MIN_POSITIVE);
    let ratio_replicas =
        per_replicas[1].tasks_per_s / per_replicas[0].tasks_per_s.max(f64::MIN_POSITIVE);
    rows.push((
        "ratio: (b) tasks/s ÷ (a) combined loop (target ≥ 0.7)".into(),
        format!("{ratio_floor:.2}"),
    ));
    rows.push((
        "ratio: 2 replicas ÷ 1 replica".into(),
        format!("{ratio_replicas:.2}"),
    ));

    print_table(rows);
    Ok(())
}

/// Samples this process's RSS in the background and keeps the peak.
pub struct PeakRss {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(every: std::time::Duration) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let peak = std::sync::Arc::new(AtomicU64::new(rss_kib()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(every).await;
                }
            }
        });
        Self { peak, stop, task }
    }

    /// Stops sampling; the peak in KiB.
    pub async fn finish(self) -> u64 {
        self.stop.cancel();
        let _ = self.task.await;
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The resident set size of this process, in KiB (0 where `/proc` is missing).
pub fn rss_kib() -> u64 {
    status_kib("/proc/self/status", "VmRSS:")
}

/// A `kB` field of a `/proc/<pid>/status` file (0 where it is missing).
fn status_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// The `q`-quantile (0..=1) of `samples`, which it sorts.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let mut samples = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut samples, 0.5), 3.0);
        assert_eq!(quantile(&mut samples, 0.0), 1.0);
        assert_eq!(quantile(&mut samples, 1.0), 5.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn rss_is_read_on_linux() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_kib() > 0);
        }
    }
}
