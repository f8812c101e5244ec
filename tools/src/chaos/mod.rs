//! `job-manager-tools chaos`: runs seed-shaped jobs across several replica processes while injecting
//! faults (kill -9 of a replica, a RabbitMQ or MongoDB restart, every result delivered twice, a
//! replica's connections to a server slowed, stalled or cut), then reports jobs submitted,
//! finished, failed, stuck and lost, and duplicated or wrong outputs.
//!
//! Everything it starts listens on 127.0.0.1 and it stops by itself: every wait is bounded.
//!
//! Layout: `check` (expected records and the report), `cluster` (the replica processes and calls
//! to them), `faults` (what each fault does), `proxy` (the TCP proxy behind network faults),
//! `urls` (pointing a replica's URLs at its proxies), `services` (commands and the run's own
//! MongoDB-wire server), `workers` (in-process workers on the `job-manager-worker` crate).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use job_manager::demo;

mod check;
mod cluster;
mod control;
mod faults;
mod proxy;
mod services;
mod urls;
mod workers;

pub use check::{Report, chaos_outputs};
pub use faults::Fault;

use check::check_record;

use cluster::Run;
use services::OwnMongo;

/// Options of `job-manager-tools chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Coordinator replicas, each its own process.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Seed-shaped jobs to run (17 tasks each).
    #[arg(long, default_value_t = 200)]
    pub jobs: usize,
    /// Faults, injected in this order a few seconds apart, e.g. `kill,kill,rabbitmq`.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// Seconds between two faults.
    #[arg(long, default_value_t = 3)]
    pub fault_interval_s: u64,
    #[command(flatten)]
    pub endpoints: job_manager::config::Endpoints,
    /// Port of the MongoDB-wire server the run starts itself for a `mongodb` fault.
    #[arg(long, default_value_t = 27018)]
    pub mongodb_port: u16,
    /// Latency a `*-slow` fault adds to each direction of a connection.
    #[arg(long, default_value_t = 250)]
    pub slow_ms: u64,
    /// How long a `*-slow` or `*-stall` fault lasts.
    #[arg(long, default_value_t = 20)]
    pub network_fault_s: u64,
    /// AMQP heartbeat the replicas ask for when the run proxies their connections (lapin gives
    /// up on a silent connection after twice this).
    #[arg(long, default_value_t = 5)]
    pub amqp_heartbeat_s: u64,
    /// Where replica logs and the run's own database files go.
    #[arg(long, default_value = "target/chaos")]
    pub work_dir: PathBuf,
    /// Pause every Nth job shortly after it starts and resume it 1.5 s later, each through
    /// another replica than the one that started it (0: never).
    #[arg(long, default_value_t = 10)]
    pub pause_every: usize,
    /// Give up waiting for jobs after this many seconds; jobs still active then count as stuck.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

/// Runs the scenario and prints the report. Fails when any job was lost, stuck or failed, or
/// has duplicated or wrong outputs.
pub async fn run(args: ChaosArgs) -> anyhow::Result<Report> {
    let began = Instant::now();
    std::fs::create_dir_all(&args.work_dir)?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let own_mongodb = if args.faults.contains(&Fault::Mongodb) {
        let dir = args.work_dir.join(format!("mongodb-{id}"));
        std::fs::create_dir_all(&dir)?;
        let mut mongo = OwnMongo {
            port: args.mongodb_port,
            dir,
            child: None,
        };
        mongo.start().await?;
        Some(mongo)
    } else {
        None
    };
    let mongodb_uri = if own_mongodb.is_some() {
        format!("mongodb://127.0.0.1:{}", args.mongodb_port)
    } else {
        args.endpoints.mongodb_uri.clone()
    };
    let proxied = args.faults.iter().any(|f| f.network().is_some());
    let run = Arc::new(Run::new(args, &id, mongodb_uri, own_mongodb, proxied).await?);
    let outcome = scenario(run.clone()).await;
    run.cleanup().await;
    let report = outcome?;
    let faults: Vec<String> = run.args.faults.iter().map(|f| f.name()).collect();
    report.print(run.args.replicas, &faults);
    println!("  took {:.1} s", began.elapsed().as_secs_f64());
    if !report.is_clean() {
        bail!("chaos run lost, stuck, failed or duplicated work");
    }
    Ok(report)
}

async fn scenario(run: Arc<Run>) -> anyhow::Result<Report> {
    for replica in &run.replicas {
        run.start_replica(&mut *replica.lock().await).await?;
    }
    let shutdown = CancellationToken::new();
    let duplicates = run.args.faults.contains(&Fault::Duplicates);
    let mut workers = workers::spawn_workers(
        &run.args.endpoints.amqp_url,
        &run.prefix,
        duplicates,
        &shutdown,
    );
    register(&run).await?;

    let started = Instant::now();
    let submitter = tokio::spawn(submit(run.clone()));
    let injector = tokio::spawn(inject_all(run.clone()));
    let (jobs, pausers) = submitter.await??;
    injector.await??;
    println!(
        "  {} jobs submitted in {:.1} s",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
    let mut counts = [0; 3];
    for pauser in pausers {
        counts[pauser.await?? as usize] += 1;
    }
    let [resumed, late, ended] = counts;
    println!(
        "  {resumed} jobs paused and resumed, {late} ended before their pause, {ended} before the answer to their resume"
    );
    let deadline = started + Duration::from_secs(run.args.timeout_s);
    let archived = wait_for_history(&run, &jobs, deadline).await?;
    let elapsed = started.elapsed();
    let report = check_jobs(&run, &jobs, &archived).await?;
    println!(
        "  all jobs checked after {:.1} s ({:.0} tasks/s)",
        elapsed.as_secs_f64(),
        (report.finished * 17) as f64 / elapsed.as_secs_f64()
    );
    shutdown.cancel();
    while workers.join_next().await.is_some() {}
    Ok(report)
}

/// Registers the seed-shaped pipeline and its machine.
async fn register(run: &Run) -> anyhow::Result<()> {
    let pipeline = format!("/pipelines/{}", demo::PIPELINE_ID);
    let body = demo::pipeline_body();
    let (status, text) = run
        .call(0, reqwest::Method::PUT, &pipeline, Some(&body))
        .await?;
    if status >= 400 {
        bail!("registering the pipeline: {status} {text}");
    }
    let machine = format!("/machines/{}", demo::MACHINE_ID);
    let body = json!({"pipeline_id": demo::PIPELINE_ID});
    let (status, text) = run
        .call(0, reqwest::Method::PUT, &machine, Some(&body))
        .await?;
    if status >= 400 {
        bail!("registering the machine: {status} {text}");
    }
    Ok(())
}

/// Started jobs (id and file name), and the pauses under way.
type Submitted = (
    Vec<(String, String)>,
    Vec<tokio::task::JoinHandle<anyhow::Result<control::Paused>>>,
);

/// Starts the run's jobs, spread over the replicas, and pauses every `--pause-every`th.
async fn submit(run: Arc<Run>) -> anyhow::Result<Submitted> {
    let mut ids = Vec::new();
    let mut pausers = Vec::new();
    for n in 0..run.args.jobs {
        let file = format!("file-{n:05}");
        let body = json!({"hash": format!("{}-{n}", run.prefix), "machine_id": demo::MACHINE_ID, "file_name": file});
        let (status, text) = run
            .call(n, reqwest::Method::POST, "/jobs", Some(&body))
            .await?;
        if status != 201 && status != 409 {
            bail!("starting job {n}: {status} {text}");
        }
        let every = run.args.pause_every;
        if every > 0 && n % every == 0 {
            let pause = control::pause_and_resume(run.clone(), text.clone(), n);
            pausers.push(tokio::spawn(pause));
        }
        ids.push((text, file));
        if n % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((ids, pausers))
}

/// Injects the run's timed faults, `--fault-interval-s` apart.
async fn inject_all(run: Arc<Run>) -> anyhow::Result<()> {
    let timed = run.args.faults.iter().filter(|f| **f != Fault::Duplicates);
    for (round, fault) in timed.enumerate() {
        tokio::time::sleep(Duration::from_secs(run.args.fault_interval_s)).await;
        run.inject(*fault, round).await?;
    }
    Ok(())
}

/// Polls the history until every job is in it or `deadline` passes; returns the ids in it.
async fn wait_for_history(
    run: &Run,
    jobs: &[(String, String)],
    deadline: Instant,
) -> anyhow::Result<BTreeSet<String>> {
    loop {
        let (status, text) = run.call(0, reqwest::Method::GET, "/history", None).await?;
        let archived: BTreeSet<String> = if status == 200 {
            serde_json::from_str::<Vec<String>>(&text)
                .unwrap_or_default()
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        let done = jobs.iter().all(|(id, _)| archived.contains(id));
        if done || Instant::now() > deadline {
            return Ok(archived);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Checks every job's record; a job missing from `archived` is stuck if it is still active.
async fn check_jobs(
    run: &Run,
    jobs: &[(String, String)],
    archived: &BTreeSet<String>,
) -> anyhow::Result<Report> {
    let mut report = Report {
        submitted: jobs.len(),
        ..Report::default()
    };
    for (job, file) in jobs {
        if !archived.contains(job) {
            let (status, _) = run
                .call(0, reqwest::Method::GET, &format!("/jobs/{job}"), None)
                .await?;
            if status == 200 {
                report.stuck += 1;
            } else {
                report.lost += 1;
            }
            continue;
        }
        let (_, text) = run
            .call(0, reqwest::Method::GET, &format!("/history/{job}"), None)
            .await?;
        let record: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if record["status"] == "finished" {
            report.finished += 1;
        } else {
            report.failed += 1;
        }
        let (duplicated, wrong) = check_record(&record, file);
        report.duplicated_outputs += duplicated;
        report.wrong_outputs += wrong;
    }
    Ok(report)
}
