//! `job-manager-tools bench`: measurements that print figures. Speed and memory targets live
//! here, never in timed tests.
//!
//! Layout: `all` (the table of `bench all`), `floor` (what MongoDB and RabbitMQ alone sustain),
//! `cluster` (replicas and no-op workers sharing a database and a prefix), `load` (starting
//! jobs and waiting for them), `runs` (the service measurements on a cluster), `workers` (the
//! no-op workers and the latency they see), `alone` (one job at a time), `python` (the seed's
//! workers on the Python SDK, in a child process), `queries` (`bench queries`), `measure` (RSS
//! and quantiles).

mod all;
mod alone;
mod cluster;
mod floor;
mod load;
mod measure;
mod python;
mod queries;
mod runs;
mod workers;

use clap::Subcommand;
use job_manager::config::Endpoints;

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

/// Options of `job-manager-tools bench width`.
#[derive(Debug, Clone, clap::Args)]
pub struct WidthArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Widths of the wide stage (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub width: Vec<usize>,
    /// Seconds a run may take before it is reported as unfinished.
    #[arg(long, default_value_t = 300)]
    pub width_limit_s: u64,
}

/// Options of `job-manager-tools bench all`.
#[derive(Debug, Clone, clap::Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
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

/// Rows of the printed table: measurement, value.
type Rows = Vec<(String, String)>;

/// Runs the chosen benchmark.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Queries(args) => queries::run(args).await,
        Bench::All(args) => {
            print_table(all::rows(args).await?);
            Ok(())
        }
        Bench::Width(args) => {
            let rows = all::width_rows(&args.endpoints, &args.width, args.width_limit_s).await?;
            print_table(rows);
            Ok(())
        }
    }
}

fn print_table(rows: Rows) {
    println!("| measurement | value |");
    println!("|---|---|");
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
}
