//! `job-manager-tools`: the benchmark and the fault-injection (chaos) run, kept out of the
//! service so the service carries no code only they use. Both drive the service from outside:
//! replicas in process through the `job_manager` library, or as `job-manager serve` processes
//! (the binary built beside this one, see [`service_binary`]), and workers on the
//! `job-manager-worker` crate.
//!
//! # Layout
//! - `bench`: `job-manager-tools bench`: the floor, throughput, latency, width, memory, listings.
//! - `chaos`: `job-manager-tools chaos`: replicas under faults, and the report.
//! - `cleanup`: deleting a run's queues, exchanges and database (`job-manager-tools cleanup`,
//!   which scripts/with-service.sh runs when its command ends).

mod bench;
mod chaos;
mod cleanup;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use job_manager::config::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "job-manager-tools",
    version,
    about = "Benchmark and fault-injection runs for job-manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure and print figures.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Run seed-shaped jobs across replica processes while injecting faults; print a report.
    Chaos(chaos::ChaosArgs),
    /// Delete what a run of the service left: its queues and exchanges under a prefix, and
    /// its database.
    Cleanup(cleanup::CleanupArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The replicas run in process: their lines stay at warnings unless RUST_LOG asks for more,
    // so a run shows its progress and its table.
    job_manager::telemetry::init_at(LogFormat::Text, "warn");
    let result = match cli.command {
        Command::Bench(bench) => bench::run(bench).await,
        Command::Chaos(args) => chaos::run(args).await.map(|_| ()),
        Command::Cleanup(args) => cleanup::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `job-manager` binary whose `serve` the tools start as replica processes:
/// `JOB_MANAGER_BIN` when set, else `job-manager` beside this binary (cargo builds both into
/// the same `target/<profile>/`; a test binary sits one level down, in `deps/`).
pub fn service_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("JOB_MANAGER_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().context("finding this binary")?;
            let mut dir = exe.parent().context("this binary's directory")?;
            if dir.ends_with("deps") {
                dir = dir.parent().unwrap_or(dir);
            }
            dir.join(format!("job-manager{}", std::env::consts::EXE_SUFFIX))
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "no service binary at {}: build it (cargo build -p job-manager) or set JOB_MANAGER_BIN",
        path.display()
    );
    Ok(path)
}
