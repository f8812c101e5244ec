//! The replicas of a chaos run: `job-manager serve` processes (of the binary beside this one,
//! see `service_binary`), each (for network faults) behind
//! proxies of its own to RabbitMQ and MongoDB, and the HTTP calls the run makes to them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use job_manager::demo;

use super::ChaosArgs;
use super::services::{OwnMongo, run_command};
use super::urls::{Proxies, proxied};

/// One replica process.
pub struct Replica {
    pub index: usize,
    /// Its HTTP port, picked anew each time it starts.
    pub port: u16,
    /// The URLs it is given, through its proxies when it has them.
    amqp_url: String,
    mongodb_uri: String,
    pub child: Option<Child>,
}

/// Everything one chaos run started.
pub struct Run {
    pub args: ChaosArgs,
    pub database: String,
    pub prefix: String,
    /// The MongoDB URI without a proxy, for the run's own use.
    pub mongodb_uri: String,
    /// The `job-manager` binary the replicas run.
    exe: PathBuf,
    client: reqwest::Client,
    pub replicas: Vec<Mutex<Replica>>,
    /// One entry per replica when the run injects network faults.
    pub proxies: Vec<Proxies>,
    pub own_mongodb: Option<Mutex<OwnMongo>>,
}

/// How many ports a replica tries before its start is given up.
const PORT_ATTEMPTS: usize = 3;

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of what a replica wrote to its log at `path` from byte `start` on.
fn log_tail(path: &std::path::Path, start: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Run {
    /// Lays out the replicas (not started yet), with proxies in front of them when `proxy`.
    pub async fn new(
        args: ChaosArgs,
        id: &str,
        mongodb_uri: String,
        own_mongodb: Option<OwnMongo>,
        proxy: bool,
    ) -> anyhow::Result<Self> {
        let mut replicas = Vec::new();
        let mut proxies = Vec::new();
        for index in 0..args.replicas.max(1) {
            let (mut amqp_url, mut replica_mongodb_uri) =
                (args.endpoints.amqp_url.clone(), mongodb_uri.clone());
            if proxy {
                let heartbeat = args.amqp_heartbeat_s;
                let (url, uri, through) = proxied(&amqp_url, &mongodb_uri, heartbeat).await?;
                (amqp_url, replica_mongodb_uri) = (url, uri);
                proxies.push(through);
            }
            replicas.push(Mutex::new(Replica {
                index,
                port: 0,
                amqp_url,
                mongodb_uri: replica_mongodb_uri,
                child: None,
            }));
        }
        Ok(Self {
            database: format!("jm_chaos_{id}"),
            prefix: format!("jm-chaos-{id}"),
            mongodb_uri,
            exe: crate::service_binary()?,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            replicas,
            proxies,
            own_mongodb: own_mongodb.map(Mutex::new),
            args,
        })
    }

    fn base(&self, port: u16) -> String {
        format!("http://127.0.0.1:{port}/job-manager")
    }

    /// Starts `replica` on a port free now (one found free earlier may have become some
    /// connection's local port since) and waits until it answers; moves to another port when
    /// the replica could not listen on the one it got.
    pub async fn start_replica(&self, replica: &mut Replica) -> anyhow::Result<()> {
        for attempt in 1..=PORT_ATTEMPTS {
            replica.port = free_port()?;
            match self.spawn_replica(replica).await? {
                None => return Ok(()),
                Some(log) if attempt < PORT_ATTEMPTS && log.contains("cannot listen") => {
                    println!("  replica {} could not listen; another port", replica.index);
                }
                Some(log) => bail!(
                    "replica {} did not come up; the end of its log:\n{log}",
                    replica.index
                ),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Spawns `replica` and waits for it to answer: `None` once it does, else the end of its log
    /// (it exited, or did not answer within a minute).
    async fn spawn_replica(&self, replica: &mut Replica) -> anyhow::Result<Option<String>> {
        let path = self
            .args
            .work_dir
            .join(format!("replica-{}.log", replica.index));
        // Appended to: a restarted replica's log follows the one it replaces.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let start = log.metadata()?.len();
        let child = Command::new(&self.exe)
            .arg("serve")
            .env("JOB_MANAGER_AMQP_URL", &replica.amqp_url)
            .env("JOB_MANAGER_MONGODB_URI", &replica.mongodb_uri)
            .env("JOB_MANAGER_DATABASE", &self.database)
            .env("JOB_MANAGER_PREFIX", &self.prefix)
            .env("JOB_MANAGER_LISTEN", format!("127.0.0.1:{}", replica.port))
            .env("JOB_MANAGER_SWEEP_INTERVAL_S", "1")
            .env("JOB_MANAGER_DISPATCH_GRACE_S", "3")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting a replica")?;
        let child = replica.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/health/live", self.base(replica.port));
        loop {
            if let Ok(response) = self.client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(None);
            }
            let exited = child.try_wait()?.is_some();
            if exited || Instant::now() > deadline {
                if !exited {
                    let _ = child.kill().await;
                }
                replica.child = None;
                return Ok(Some(log_tail(&path, start)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a request to some live replica, starting with `first`, until it gets a non-5xx answer.
    pub async fn call(
        &self,
        first: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, String)> {
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout_s);
        let mut attempt = first;
        loop {
            let port = self.replicas[attempt % self.replicas.len()]
                .lock()
                .await
                .port;
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.base(port)));
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Ok(response) = request.send().await {
                let status = response.status().as_u16();
                if status < 500 {
                    return Ok((status, response.text().await.unwrap_or_default()));
                }
            }
            if Instant::now() > deadline {
                bail!("no replica answered {method} {path}");
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `/metrics` text of the replica on `port`, if it answers.
    pub async fn metrics(&self, port: u16) -> Option<String> {
        let url = format!("{}/metrics", self.base(port));
        let response = self.client.get(url).send().await.ok()?;
        response.text().await.ok()
    }

    /// Stops the replicas with SIGTERM (checking that they exit 0), then removes the run's
    /// queues, exchanges and database, and stops its own MongoDB-wire server.
    pub async fn cleanup(&self) {
        for replica in &self.replicas {
            let mut replica = replica.lock().await;
            if let Some(mut child) = replica.child.take() {
                if let Some(pid) = child.id() {
                    let _ = run_command("kill", &["-TERM", &pid.to_string()]).await;
                }
                match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                    Ok(Ok(status)) if status.success() => {}
                    other => println!(
                        "  replica {} did not stop cleanly: {other:?}",
                        replica.index
                    ),
                }
            }
        }
        let url = &self.args.endpoints.amqp_url;
        crate::cleanup::delete_topology(url, &self.prefix, &demo::WORKERS).await;
        if let Ok(store) =
            job_manager::store::Store::connect(&self.mongodb_uri, &self.database).await
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), store.database().drop()).await;
            store.shutdown().await;
        }
        if let Some(mongo) = &self.own_mongodb {
            let mut mongo = mongo.lock().await;
            let _ = mongo.stop().await;
            let _ = std::fs::remove_dir_all(&mongo.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: ChaosArgs,
    }

    /// A replica whose port was taken meanwhile exits at once: that is noticed at once, with the
    /// reason from its log, and `start_replica` moves it to a port free now.
    #[tokio::test]
    async fn a_replica_whose_port_was_taken_starts_on_another() {
        let work_dir = std::env::temp_dir().join(format!("jm-chaos-test-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir).expect("work dir");
        let work = work_dir.to_string_lossy().into_owned();
        let args = Line::parse_from(["chaos", "--replicas", "1", "--work-dir", &work]).args;
        let id = format!("test-{}", uuid::Uuid::new_v4().simple());
        let uri = args.endpoints.mongodb_uri.clone();
        let run = Run::new(args, &id, uri, None, false).await.expect("run");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");

        let mut replica = run.replicas[0].lock().await;
        replica.port = taken.local_addr().expect("address").port();
        let began = Instant::now();
        let log = run.spawn_replica(&mut replica).await.expect("spawn");
        let log = log.expect("a replica on a taken port must not come up");
        assert!(log.contains("cannot listen"), "log: {log}");
        assert!(began.elapsed() < Duration::from_secs(30), "noticed late");
        assert!(replica.child.is_none());

        let started = run.start_replica(&mut replica).await;
        let port = replica.port;
        drop(replica);
        run.cleanup().await;
        let _ = std::fs::remove_dir_all(&work_dir);
        started.expect("starts on another port");
        assert_ne!(port, taken.local_addr().expect("address").port());
    }
}
