//! `bench all`: the rows of the table, section by section (README, "Performance").

use std::time::Duration;

use job_manager::config::Endpoints;
use job_manager::store::Store;

use super::measure::{Races, Steps, mib, p50_p99, quantile};
use super::python::{Interpreter, Skipped};
use super::runs::{self, Load, Setup};
use super::{AllArgs, Rows, alone, floor};

/// Concurrency of each Python SDK worker in the Python rows: the SDK's default, what a user gets
/// without choosing, and enough for the 14 tasks of the seed's fan-out to run at once.
const PYTHON_CONCURRENCY: [usize; 2] = [1, 16];

/// The median of one job alone with Python SDK workers at a concurrency, or why it was skipped.
type PythonMedians = Vec<(usize, Result<f64, Skipped>)>;

/// Small sizes everywhere for `--quick`.
fn quick(args: &mut AllArgs) {
    args.jobs = 20;
    args.width = vec![50];
    args.idle_jobs = 50;
    args.prefetch = vec![64];
    args.floor_s = 1;
}

/// Every row of `bench all`.
pub async fn rows(mut args: AllArgs) -> anyhow::Result<Rows> {
    if args.quick {
        quick(&mut args);
    }
    let e = &args.endpoints;
    eprintln!("bench: measuring the floor");
    let (mut rows, floor) = floor_rows(e, args.floor_s, args.quick).await?;
    eprintln!("bench: job-manager on the seed's shape");
    let mut seed = seed_runs(e, args.jobs).await?;
    let one = &mut seed.per_replicas[0];
    let (tasks_per_s, jobs_per_s) = (one.tasks_per_s, one.jobs_per_s);
    rows.push(("(b) tasks/s, 1 replica".into(), format!("{tasks_per_s:.0}")));
    rows.push(("(b) jobs/s, 1 replica".into(), format!("{jobs_per_s:.1}")));
    rows.push((
        "(b) result published → next stage's dispatch received (at the worker), p50 / p99".into(),
        p50_p99(&mut one.latencies_ms),
    ));
    rows.push((
        "(b) where a hop's time goes, 1 replica: mean per step (count)".into(),
        seed.steps.clone(),
    ));
    let alone_runs = if args.quick { 10 } else { 50 };
    let (half_and_alone, alone_median_ms) =
        half_load_and_alone_rows(e, args.jobs, jobs_per_s, alone_runs).await?;
    rows.extend(half_and_alone);
    eprintln!("bench: one job alone with Python SDK workers");
    let (python_rows, python_medians) = python_alone_rows(e, alone_runs).await?;
    rows.extend(python_rows);
    rows.extend(prefetch_rows(e, &args.prefetch, args.jobs).await?);
    rows.extend(seed.replica_rows());
    eprintln!("bench: wide stages");
    rows.extend(width_rows(e, &args.width, args.width_limit_s).await?);
    eprintln!("bench: memory with many active jobs");
    rows.push(memory_row(e, args.idle_jobs).await?);
    rows.extend(ratio_rows(&seed.per_replicas, &floor, alone_median_ms));
    rows.extend(python_ratio_rows(&python_medians, &floor));
    Ok(rows)
}

/// The seed shape's runs with 1, 2 and 3 replicas, with the step budget of the first and the
/// races of each.
struct SeedRuns {
    per_replicas: Vec<runs::Throughput>,
    steps: String,
    races: Vec<String>,
}

async fn seed_runs(e: &Endpoints, jobs: usize) -> anyhow::Result<SeedRuns> {
    let saturate = Load::Saturate { in_flight: 32 };
    let mut seed = SeedRuns {
        per_replicas: Vec::new(),
        steps: String::new(),
        races: Vec::new(),
    };
    for replicas in 1..=3 {
        let (before, raced) = (Steps::now(), Races::now());
        let run = runs::throughput(e, Setup::replicas(replicas), jobs, saturate).await?;
        if replicas == 1 {
            seed.steps = Steps::now().since(&before);
        }
        seed.races
            .push(Races::now().since(&raced, jobs as f64 * 17.0));
        seed.per_replicas.push(run);
    }
    Ok(seed)
}

impl SeedRuns {
    /// Section (c): tasks/s and races per replica count.
    fn replica_rows(&self) -> Rows {
        let mut rows: Rows = self
            .per_replicas
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let name = format!("(c) tasks/s, {} replica(s)", i + 1);
                (name, format!("{:.0}", run.tasks_per_s))
            })
            .collect();
        for (i, raced) in self.races.iter().enumerate() {
            rows.push((format!("(c) {} replica(s): races", i + 1), raced.clone()));
        }
        rows
    }
}

/// The seed shape on one replica with each result prefetch.
async fn prefetch_rows(e: &Endpoints, prefetches: &[u16], jobs: usize) -> anyhow::Result<Rows> {
    let mut rows = Vec::new();
    for prefetch in prefetches {
        let setup = Setup {
            prefetch: *prefetch,
            ..Setup::replicas(1)
        };
        let saturate = Load::Saturate { in_flight: 32 };
        let run = runs::throughput(e, setup, jobs, saturate).await?;
        rows.push((
            format!("(b) tasks/s with result prefetch {prefetch}"),
            format!("{:.0}", run.tasks_per_s),
        ));
    }
    Ok(rows)
}

/// The ratios against the floor and between replica counts.
fn ratio_rows(per_replicas: &[runs::Throughput], floor: &Floor, alone_median_ms: f64) -> Rows {
    let ratio_floor = per_replicas[0].tasks_per_s / floor.combined_32.max(f64::MIN_POSITIVE);
    let ratio_replicas =
        per_replicas[1].tasks_per_s / per_replicas[0].tasks_per_s.max(f64::MIN_POSITIVE);
    // The seed job's critical path is five hops (start, 01, 02, 03, the fan-out of 04) plus the
    // archive: six per-task loops at concurrency 1.
    let loop_ms = 1000.0 / floor.combined_1.max(f64::MIN_POSITIVE);
    vec![
        (
            "ratio: (b) tasks/s ÷ (a) combined loop (target ≥ 0.7)".into(),
            format!("{ratio_floor:.2}"),
        ),
        (
            "ratio: 2 replicas ÷ 1 replica".into(),
            format!("{ratio_replicas:.2}"),
        ),
        (
            "ratio: one job alone (median) ÷ (6 × the per-task loop at concurrency 1) (target ≤ 1.5)"
                .into(),
            format!("{:.2}", alone_median_ms / (6.0 * loop_ms)),
        ),
    ]
}

/// One job alone against six per-task loops at concurrency 1, with Python SDK workers.
fn python_ratio_rows(medians: &PythonMedians, floor: &Floor) -> Rows {
    let loop_ms = 1000.0 / floor.combined_1.max(f64::MIN_POSITIVE);
    medians
        .iter()
        .map(|(concurrency, median)| {
            let name = format!(
                "ratio: one job alone with Python SDK workers, concurrency {concurrency} (median) ÷ (6 × the per-task loop at concurrency 1)"
            );
            let value = match median {
                Ok(ms) => format!("{:.2}", ms / (6.0 * loop_ms)),
                Err(skipped) => skipped.to_string(),
            };
            (name, value)
        })
        .collect()
}

/// Section (a), and the combined loop's tasks/s the ratio compares with.
async fn floor_rows(e: &Endpoints, floor_s: u64, quick: bool) -> anyhow::Result<(Rows, Floor)> {
    let floor_time = Duration::from_secs(floor_s);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let store = Store::connect(&e.mongodb_uri, &format!("jm_bench_floor_{id}")).await?;
    let prefix = format!("jm-bench-floor-{}", &id[..8]);
    let measured = async {
        let cas_1 = floor::cas(&store, 1, floor_time).await?;
        let cas_32 = floor::cas(&store, 32, floor_time).await?;
        let broker = floor::publish(&e.amqp_url, &prefix, floor_time).await?;
        let messages = if quick { 500 } else { 5_000 };
        let combined_32 = floor::combined(&e.amqp_url, &prefix, &store, 32, messages).await?;
        let combined_1 = floor::combined(&e.amqp_url, &prefix, &store, 1, messages / 5).await?;
        Ok::<_, anyhow::Error>((cas_1, cas_32, broker, combined_32, combined_1))
    }
    .await;
    let _ = store.database().drop().await;
    store.shutdown().await;
    let (cas_1, cas_32, broker, combined_32, combined_1) = measured?;
    let rows = vec![
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
            format!("{:.0} /s", broker.awaited),
        ),
        (
            "(a) persistent publish, confirms pipelined".into(),
            format!("{:.0} /s", broker.pipelined),
        ),
        (
            "(a) consume + ack".into(),
            format!("{:.0} /s", broker.consume_ack),
        ),
        (
            "(a) combined per-task loop, concurrency 32".into(),
            format!("{combined_32:.0} tasks/s"),
        ),
        (
            "(a) combined per-task loop, concurrency 1".into(),
            format!(
                "{combined_1:.0} tasks/s ({:.2} ms a task)",
                1000.0 / combined_1.max(f64::MIN_POSITIVE)
            ),
        ),
    ];
    let floor = Floor {
        combined_32,
        combined_1,
    };
    Ok((rows, floor))
}

/// The per-task loops the job-manager figures are held against.
struct Floor {
    combined_32: f64,
    combined_1: f64,
}

/// The latency at half of the measured maximum, and one job alone.
async fn half_load_and_alone_rows(
    e: &Endpoints,
    jobs: usize,
    max_jobs_per_s: f64,
    alone_runs: usize,
) -> anyhow::Result<(Rows, f64)> {
    // Half of the maximum, as a steady arrival rate.
    let half = max_jobs_per_s / 2.0;
    let load = Load::Paced { jobs_per_s: half };
    let mut paced = runs::throughput(e, Setup::replicas(1), jobs / 2, load).await?;
    let mut alone = alone::jobs_alone(e, alone_runs + 1).await?;
    let median_ms = quantile(&mut alone.warm_ms, 0.5);
    let rows = vec![
        (
            format!("(b) p50 / p99 at half load ({half:.1} jobs/s arriving)"),
            p50_p99(&mut paced.latencies_ms),
        ),
        (
            "(b) one job alone, end to end: POST /jobs answered → job.finished, median / p99 of warm runs".into(),
            format!("{} (cold first run {:.1} ms)", p50_p99(&mut alone.warm_ms), alone.cold_ms),
        ),
    ];
    Ok((rows, median_ms))
}

/// One job alone with the seed's workers on the Python SDK (one process) at each of
/// [`PYTHON_CONCURRENCY`], `runs` warm runs each; a "skipped" row when there is no Python with
/// pika here.
async fn python_alone_rows(e: &Endpoints, runs: usize) -> anyhow::Result<(Rows, PythonMedians)> {
    let interpreter = Interpreter::find();
    let (mut rows, mut medians) = (Vec::new(), Vec::new());
    for concurrency in PYTHON_CONCURRENCY {
        let name = format!(
            "(b) one job alone with Python SDK workers (one process, concurrency {concurrency}), end to end: median / p99 of warm runs"
        );
        let median = match &interpreter {
            Err(skipped) => {
                rows.push((name, skipped.to_string()));
                Err(skipped.clone())
            }
            Ok(python) => {
                let mut run = alone::python_jobs_alone(e, runs + 1, python, concurrency).await?;
                let value = format!(
                    "{} (cold first run {:.1} ms)",
                    p50_p99(&mut run.warm_ms),
                    run.cold_ms
                );
                rows.push((name, value));
                Ok(quantile(&mut run.warm_ms, 0.5))
            }
        };
        medians.push((concurrency, median));
    }
    Ok((rows, medians))
}

/// Section (d): one row per width.
pub async fn width_rows(e: &Endpoints, widths: &[usize], limit_s: u64) -> anyhow::Result<Rows> {
    let mut rows = Vec::new();
    for width in widths {
        let wide = runs::width(e, *width, Duration::from_secs(limit_s)).await?;
        let time = wide
            .seconds
            .map_or(format!("did not finish within {limit_s} s"), |s| {
                format!("{s:.1} s")
            });
        rows.push((
            format!("(d) one stage {width} wide"),
            format!(
                "{time}, replica peak RSS {:.0} MiB, job document {:.2} MiB",
                mib(wide.peak_kib),
                wide.document_bytes as f64 / 1024.0 / 1024.0
            ),
        ));
    }
    Ok(rows)
}

/// Section (e).
async fn memory_row(e: &Endpoints, idle_jobs: usize) -> anyhow::Result<(String, String)> {
    let (before, after, peak) = runs::idle_jobs(e, idle_jobs).await?;
    Ok((
        format!("(e) replica RSS with {idle_jobs} active jobs"),
        format!(
            "{:.0} MiB (idle before: {:.0} MiB, peak while starting them: {:.0} MiB)",
            mib(after),
            mib(before),
            mib(peak)
        ),
    ))
}
