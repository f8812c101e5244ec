//! The `job-manager` binary: parse the command line, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use job_manager::config::Config;
use job_manager::{app, demo, telemetry};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "job-manager",
    version,
    about = "Coordinator for multi-stage file-processing pipelines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    api: job_manager::cli::ApiArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the REST API and the result consumer.
    Serve(Config),
    #[command(flatten)]
    Operate(job_manager::cli::Command),
    /// Run the service, demo workers and one job of the seed-shaped pipeline on a bundled CSV.
    Demo {
        #[command(flatten)]
        config: Config,
        /// Where the demo keeps its files.
        #[arg(long, default_value = "target/demo-data")]
        data_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => {
            let telemetry =
                telemetry::init_with(config.log_format, config.otlp_endpoint.as_deref());
            let served = match TcpListener::bind(config.listen).await {
                Ok(listener) => app::run(config, listener, app::shutdown_signal()).await,
                Err(error) => Err(anyhow::Error::new(error)
                    .context(format!("cannot listen on {}", config.listen))),
            };
            telemetry.shutdown().await;
            served
        }
        Command::Operate(command) => job_manager::cli::run(cli.api, command).await,
        Command::Demo { config, data_dir } => {
            telemetry::init(config.log_format);
            demo::run(config, data_dir).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
