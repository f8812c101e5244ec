//! The seed's workers served by the Python SDK, for the Python row of `bench all`: one child
//! process (`sdk/python/examples/seed_workers.py`, one `Worker` per worker id) run by the venv
//! that `scripts/sdk-test.sh` creates. Paths are taken from the current directory, the
//! repository's root, as `scripts/bench-smoke.sh` and the README run the benchmark.

use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use job_manager::amqp::Names;
use job_manager::amqp::topology::declare_worker_queue;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

/// The interpreter: `JOB_MANAGER_PYTHON`, else the venv `scripts/sdk-test.sh` creates.
const VENV_PYTHON: &str = "target/py-venv/bin/python";
/// What `PYTHONPATH` gets, so the SDK is imported from the working tree.
const SDK_DIR: &str = "sdk/python";
const SCRIPT: &str = "sdk/python/examples/seed_workers.py";
/// How long the workers may take to start consuming.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Why the Python row was not measured: printed in its place.
#[derive(Debug, Clone)]
pub struct Skipped(String);

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

/// A Python interpreter that can import pika and the SDK.
#[derive(Debug, Clone)]
pub struct Interpreter {
    python: PathBuf,
}

impl Interpreter {
    /// `JOB_MANAGER_PYTHON`, else the venv's interpreter; or why the Python rows cannot be
    /// measured here.
    pub fn find() -> Result<Self, Skipped> {
        Self::at(std::env::var_os("JOB_MANAGER_PYTHON").map_or(VENV_PYTHON.into(), PathBuf::from))
    }

    /// The interpreter at `python`, if it can import pika and the SDK.
    fn at(python: PathBuf) -> Result<Self, Skipped> {
        if !python.is_file() {
            return Err(Skipped(format!(
                "no Python at {} (scripts/sdk-test.sh creates the venv; JOB_MANAGER_PYTHON names another)",
                python.display()
            )));
        }
        if !PathBuf::from(SCRIPT).is_file() {
            return Err(Skipped(format!(
                "no {SCRIPT} here (run the benchmark from the repository's root)"
            )));
        }
        let imports = Command::new(&python)
            .args(["-c", "import pika, job_manager_worker"])
            .env("PYTHONPATH", SDK_DIR)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !imports.is_ok_and(|status| status.success()) {
            return Err(Skipped(format!(
                "{} cannot import pika and the SDK (scripts/sdk-test.sh installs pika)",
                python.display()
            )));
        }
        Ok(Self { python })
    }
}

/// The Python worker process. Killed when dropped, so no error on the way leaves it running;
/// it also stops by itself when the benchmark ends, since it watches its stdin.
pub struct PythonWorkers {
    child: Child,
}

impl PythonWorkers {
    /// Starts the seed's workers, each running up to `concurrency` handlers at once.
    pub fn spawn(
        interpreter: &Interpreter,
        amqp_url: &str,
        prefix: &str,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let child = Command::new(&interpreter.python)
            .arg(SCRIPT)
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--stop-on-stdin-eof",
            ])
            .env("PYTHONPATH", SDK_DIR)
            .env("JOB_MANAGER_AMQP_URL", amqp_url)
            .env("JOB_MANAGER_PREFIX", prefix)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the Python workers")?;
        Ok(Self { child })
    }

    /// Waits until every queue of `worker_ids` has a consumer. The queues are declared first,
    /// as the coordinator declares them, so that asking for their consumers cannot fail.
    pub async fn wait_consuming(
        &mut self,
        amqp_url: &str,
        prefix: &str,
        worker_ids: &[&str],
    ) -> anyhow::Result<()> {
        let connection = job_manager::amqp::connect(amqp_url, "bench python workers").await?;
        let channel = connection.create_channel().await?;
        let names = Names::new(prefix);
        let started = Instant::now();
        for worker_id in worker_ids {
            declare_worker_queue(&channel, &names, worker_id).await?;
            let queue = names.worker_queue(worker_id);
            while consumers(&channel, &queue).await? == 0 {
                if let Some(status) = self.child.try_wait()? {
                    anyhow::bail!("the Python workers exited ({status})");
                }
                anyhow::ensure!(
                    started.elapsed() < START_LIMIT,
                    "the Python workers did not consume {queue} within {START_LIMIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = connection.close(200, "ready".into()).await;
        Ok(())
    }

    /// Asks the workers to stop (SIGTERM: they drain and close their connections), and kills
    /// them if they have not within 15 s.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PythonWorkers {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Consumers of `queue`, which exists.
async fn consumers(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(declared.consumer_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interpreter_is_a_skipped_row_that_says_where_it_looked() {
        let skipped = Interpreter::at("/nonexistent/py-venv/bin/python".into())
            .expect_err("no interpreter there")
            .to_string();
        assert!(
            skipped.starts_with("skipped: no Python at /nonexistent/py-venv/bin/python"),
            "{skipped}"
        );
        assert!(skipped.contains("scripts/sdk-test.sh"), "{skipped}");
    }
}
