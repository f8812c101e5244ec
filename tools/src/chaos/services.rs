//! The servers a chaos run disturbs: commands it runs, and a MongoDB-wire server of its own.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

pub async fn run_command(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {} failed with {status}", args.join(" "));
    }
    Ok(())
}

/// A MongoDB-wire server of the run's own, so restarting it disturbs nothing else.
pub struct OwnMongo {
    pub port: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl OwnMongo {
    fn command(&self) -> Command {
        let dir = self.dir.join("data");
        let _ = std::fs::create_dir_all(&dir);
        if which("mongod") {
            let mut command = Command::new("mongod");
            command
                .args([
                    "--bind_ip",
                    "127.0.0.1",
                    "--port",
                    &self.port.to_string(),
                    "--dbpath",
                ])
                .arg(&dir);
            command
        } else {
            let mut command = Command::new("secantusd-rs");
            command
                .args([
                    "--port",
                    &self.port.to_string(),
                    "--log-file-max",
                    "16MB",
                    "--cache-size",
                    "256M",
                    "--storage-path",
                ])
                .arg(&dir);
            command
        }
    }

    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("mongodb.log"))?;
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting the run's own MongoDB-wire server (mongod or secantusd-rs)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("the run's MongoDB-wire server did not start");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// A clean stop (SIGTERM), as a restart by an operator would do.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                run_command("kill", &["-TERM", &pid.to_string()]).await?;
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                child.start_kill()?;
                let _ = child.wait().await;
            }
        }
        Ok(())
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
