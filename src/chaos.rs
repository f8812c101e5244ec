//! `job-manager chaos`: runs seed-shaped jobs across several replica processes while injecting
//! faults (kill -9 of a replica, a RabbitMQ restart, a MongoDB restart, every result delivered
//! twice), then reports jobs submitted, finished, failed and lost, and duplicated outputs.
//!
//! Everything it starts listens on 127.0.0.1 and it stops by itself: every wait is bounded.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::amqp::publisher::Outgoing;
use crate::amqp::{self, Names, Publisher};
use crate::demo;
use crate::messages::{RESULT_TYPE, StageDispatch, StageResult};
use crate::worker::{self, WorkerOutput};

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// `kill -9` one replica, then start it again.
    Kill,
    /// Stop and start the RabbitMQ application (`rabbitmqctl stop_app` / `start_app`).
    Rabbitmq,
    /// Stop and start the MongoDB-wire server (the run then starts its own on `--mongodb-port`).
    Mongodb,
    /// Deliver every result twice (for the whole run).
    Duplicates,
}

/// Options of `job-manager chaos`.
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
    pub endpoints: crate::config::Endpoints,
    /// Port of the MongoDB-wire server the run starts itself for a `mongodb` fault.
    #[arg(long, default_value_t = 27018)]
    pub mongodb_port: u16,
    /// Where replica logs and the run's own database files go.
    #[arg(long, default_value = "target/chaos")]
    pub work_dir: PathBuf,
    /// Give up waiting for jobs after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

/// The figures of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub submitted: usize,
    pub finished: usize,
    pub failed: usize,
    pub lost: usize,
    pub duplicated_outputs: usize,
    pub wrong_outputs: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.submitted > 0
            && self.finished == self.submitted
            && self.failed == 0
            && self.lost == 0
            && self.duplicated_outputs == 0
            && self.wrong_outputs == 0
    }
}

/// What the chaos workers return: deterministic, so the record can be checked exactly.
pub fn chaos_outputs(dispatch: &StageDispatch) -> Result<Value, String> {
    let text = |name: &str| {
        dispatch
            .inputs
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("input '{name}' missing"))
    };
    Ok(match dispatch.worker.id.as_str() {
        "import-csv" => json!({"csv_file": format!("csv-{}", text("source_file")?)}),
        "trim-csv" => json!({"output_csv": format!("trim-{}", text("input_csv")?)}),
        "split-by-sensor" => {
            let input = text("input_csv")?;
            Value::Array(
                (1..=14)
                    .map(|n| json!({"unique_id": format!("sensor-{n:02}"), "result_table": format!("{input}-{n:02}")}))
                    .collect(),
            )
        }
        "sink" => Value::Null,
        other => return Err(format!("no chaos worker '{other}'")),
    })
}

/// The stage outputs a job on `file` must end with.
pub fn expected_stages(file: &str) -> Vec<(String, Vec<Value>)> {
    let csv = format!("csv-{file}");
    let trimmed = format!("trim-{csv}");
    vec![
        ("init".into(), vec![json!({"init_source": file})]),
        ("01".into(), vec![json!({"csv_file": csv})]),
        ("02".into(), vec![json!({"output_csv": trimmed})]),
        (
            "03".into(),
            (1..=14)
                .map(|n| json!({"unique_id": format!("sensor-{n:02}"), "result_table": format!("{trimmed}-{n:02}")}))
                .collect(),
        ),
        ("04".into(), vec![Value::Null; 14]),
    ]
}

/// Compares a history record with what it must be: `(duplicated, wrong)` output counts.
pub fn check_record(record: &Value, file: &str) -> (usize, usize) {
    let expected = expected_stages(file);
    let stages = record["stages"].as_array().cloned().unwrap_or_default();
    let mut duplicated = 0;
    let mut wrong = 0;
    for (i, (id, outputs)) in expected.iter().enumerate() {
        let Some(stage) = stages.get(i).filter(|s| s["id"] == id.as_str()) else {
            wrong += outputs.len();
            continue;
        };
        let actual = stage["outputs"].as_array().cloned().unwrap_or_default();
        duplicated += actual.len().saturating_sub(outputs.len());
        wrong += outputs
            .iter()
            .enumerate()
            .filter(|(n, o)| actual.get(*n) != Some(o))
            .count();
    }
    wrong += stages.len().saturating_sub(expected.len());
    (duplicated, wrong)
}

struct Replica {
    index: usize,
    port: u16,
    child: Option<Child>,
}

struct Run {
    args: ChaosArgs,
    database: String,
    prefix: String,
    mongodb_uri: String,
    exe: PathBuf,
    client: reqwest::Client,
    replicas: Vec<Mutex<Replica>>,
    own_mongodb: Option<Mutex<OwnMongo>>,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Run {
    fn base(&self, port: u16) -> String {
        format!("http://127.0.0.1:{port}/job-manager")
    }

    async fn start_replica(&self, replica: &mut Replica) -> anyhow::Result<()> {
        let log = std::fs::File::create(
            self.args
                .work_dir
                .join(format!("replica-{}.log", replica.index)),
        )?;
        let child = Command::new(&self.exe)
            .arg("serve")
            .env("JOB_MANAGER_AMQP_URL", &self.args.endpoints.amqp_url)
            .env("JOB_MANAGER_MONGODB_URI", &self.mongodb_uri)
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
        replica.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let url = format!("{}/health/live", self.base(replica.port));
            if let Ok(response) = self.client.get(url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("replica {} did not come up", replica.index);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a request to some live replica, starting with `first`, until it gets a non-5xx answer.
    async fn call(
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

    async fn inject(&self, fault: Fault, round: usize) -> anyhow::Result<()> {
        match fault {
            Fault::Kill => {
                let index = round % self.replicas.len();
                let mut replica = self.replicas[index].lock().await;
                if let Some(mut child) = replica.child.take() {
                    child.start_kill()?;
                    let _ = child.wait().await;
                }
                println!("  fault: kill -9 replica {index}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.start_replica(&mut replica).await?;
            }
            Fault::Rabbitmq => {
                println!("  fault: restart rabbitmq");
                run_command("rabbitmqctl", &["stop_app"]).await?;
                tokio::time::sleep(Duration::from_secs(5)).await;
                run_command("rabbitmqctl", &["start_app"]).await?;
            }
            Fault::Mongodb => {
                let Some(mongo) = &self.own_mongodb else {
                    bail!("a mongodb fault needs the run's own server");
                };
                println!("  fault: restart mongodb");
                let mut mongo = mongo.lock().await;
                mongo.stop().await?;
                // Longer than the driver's 5 s server selection, so operations really fail.
                tokio::time::sleep(Duration::from_secs(8)).await;
                mongo.start().await?;
            }
            Fault::Duplicates => {}
        }
        Ok(())
    }
}

async fn run_command(program: &str, args: &[&str]) -> anyhow::Result<()> {
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
struct OwnMongo {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
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

    async fn start(&mut self) -> anyhow::Result<()> {
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
    async fn stop(&mut self) -> anyhow::Result<()> {
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

/// Starts the chaos workers; with `duplicates`, each result is also published a second time.
fn spawn_workers(
    url: &str,
    names: &Names,
    duplicates: bool,
    shutdown: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    let copier: Arc<Mutex<Option<(lapin::Connection, Publisher)>>> = Arc::new(Mutex::new(None));
    for worker_id in demo::WORKERS {
        let (url, names, shutdown, copier) = (
            url.to_owned(),
            names.clone(),
            shutdown.clone(),
            copier.clone(),
        );
        let reply_to = names.results_queue();
        let amqp_url = url.clone();
        let handler = move |dispatch: StageDispatch| {
            let (copier, reply_to, amqp_url) = (copier.clone(), reply_to.clone(), amqp_url.clone());
            async move {
                let outputs = chaos_outputs(&dispatch)?;
                if duplicates {
                    let copy = StageResult {
                        task_id: dispatch.task_id.clone(),
                        job_id: dispatch.job_id.clone(),
                        run_id: Some(dispatch.run_id.clone()),
                        outputs: outputs.clone(),
                        log: None,
                        error: None,
                    };
                    publish_copy(&copier, &amqp_url, &reply_to, &copy).await;
                }
                Ok(WorkerOutput::new(outputs))
            }
        };
        set.spawn(
            async move { worker::serve(&url, &names, worker_id, 32, handler, shutdown).await },
        );
    }
    set
}

/// Publishes the extra copy of a result; a failure only costs the copy.
async fn publish_copy(
    copier: &Mutex<Option<(lapin::Connection, Publisher)>>,
    url: &str,
    queue: &str,
    result: &StageResult,
) {
    let mut guard = copier.lock().await;
    if guard
        .as_ref()
        .is_none_or(|(c, p)| !c.status().connected() || !p.channel().status().connected())
    {
        *guard = None;
        if let Ok(connection) = amqp::connect(url, "chaos duplicates").await
            && let Ok(publisher) = Publisher::open(&connection).await
        {
            *guard = Some((connection, publisher));
        }
    }
    let publisher = guard.as_ref().map(|(_, p)| p.clone());
    drop(guard);
    if let (Some(publisher), Ok(message)) =
        (publisher, Outgoing::json("", queue, RESULT_TYPE, result))
    {
        let _ = publisher.publish(message).await;
    }
}

/// Runs the scenario and prints the report. Fails when any job was lost, failed or has
/// duplicated or wrong outputs.
pub async fn run(args: ChaosArgs) -> anyhow::Result<Report> {
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
        Some(Mutex::new(mongo))
    } else {
        None
    };
    let mongodb_uri = if own_mongodb.is_some() {
        format!("mongodb://127.0.0.1:{}", args.mongodb_port)
    } else {
        args.endpoints.mongodb_uri.clone()
    };
    let mut replicas = Vec::new();
    for index in 0..args.replicas.max(1) {
        replicas.push(Mutex::new(Replica {
            index,
            port: free_port()?,
            child: None,
        }));
    }
    let run = Arc::new(Run {
        database: format!("jm_chaos_{id}"),
        prefix: format!("jm-chaos-{id}"),
        mongodb_uri,
        exe: std::env::current_exe()?,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        replicas,
        own_mongodb,
        args,
    });
    let outcome = scenario(run.clone()).await;
    cleanup(&run).await;
    let report = outcome?;
    print_report(&run.args, &report);
    if !report.is_clean() {
        bail!("chaos run lost, failed or duplicated work");
    }
    Ok(report)
}

async fn scenario(run: Arc<Run>) -> anyhow::Result<Report> {
    for replica in &run.replicas {
        run.start_replica(&mut *replica.lock().await).await?;
    }
    let names = Names::new(run.prefix.clone());
    let shutdown = CancellationToken::new();
    let duplicates = run.args.faults.contains(&Fault::Duplicates);
    let mut workers = spawn_workers(&run.args.endpoints.amqp_url, &names, duplicates, &shutdown);

    let put = |path: String, body: Value| {
        let run = run.clone();
        async move { run.call(0, reqwest::Method::PUT, &path, Some(&body)).await }
    };
    let (status, text) = put(
        format!("/pipelines/{}", demo::PIPELINE_ID),
        demo::pipeline_body(),
    )
    .await?;
    if status >= 400 {
        bail!("registering the pipeline: {status} {text}");
    }
    put(
        format!("/machines/{}", demo::MACHINE_ID),
        json!({"pipeline_id": demo::PIPELINE_ID}),
    )
    .await?;

    let started = Instant::now();
    let submitted = Arc::new(AtomicUsize::new(0));
    let submitter = tokio::spawn({
        let (run, submitted) = (run.clone(), submitted.clone());
        async move {
            let mut ids = Vec::new();
            for n in 0..run.args.jobs {
                let body = json!({"hash": format!("{}-{n}", run.prefix), "machine_id": demo::MACHINE_ID, "file_name": format!("file-{n:05}")});
                let (status, text) = run
                    .call(n, reqwest::Method::POST, "/jobs", Some(&body))
                    .await?;
                if status != 201 && status != 409 {
                    bail!("starting job {n}: {status} {text}");
                }
                ids.push((text, format!("file-{n:05}")));
                submitted.fetch_add(1, Ordering::Relaxed);
                if n % 10 == 9 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok::<_, anyhow::Error>(ids)
        }
    });
    let injector = tokio::spawn({
        let run = run.clone();
        async move {
            let timed: Vec<Fault> = run
                .args
                .faults
                .iter()
                .copied()
                .filter(|f| *f != Fault::Duplicates)
                .collect();
            for (round, fault) in timed.into_iter().enumerate() {
                tokio::time::sleep(Duration::from_secs(run.args.fault_interval_s)).await;
                run.inject(fault, round).await?;
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    let jobs = submitter.await??;
    injector.await??;
    println!(
        "  {} jobs submitted in {:.1} s",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );

    let deadline = started + Duration::from_secs(run.args.timeout_s);
    let wanted: BTreeSet<&str> = jobs.iter().map(|(id, _)| id.as_str()).collect();
    let archived = loop {
        let (status, text) = run.call(0, reqwest::Method::GET, "/history", None).await?;
        let archived: BTreeSet<String> = if status == 200 {
            serde_json::from_str::<Vec<String>>(&text)
                .unwrap_or_default()
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        let done = wanted.iter().filter(|id| archived.contains(**id)).count();
        if done == wanted.len() || Instant::now() > deadline {
            break archived;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let elapsed = started.elapsed();

    let mut report = Report {
        submitted: submitted.load(Ordering::Relaxed),
        ..Report::default()
    };
    for (job, file) in &jobs {
        if !archived.contains(job) {
            report.lost += 1;
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
    println!(
        "  all jobs checked after {:.1} s ({:.0} tasks/s)",
        elapsed.as_secs_f64(),
        (report.finished * 17) as f64 / elapsed.as_secs_f64()
    );
    shutdown.cancel();
    while workers.join_next().await.is_some() {}
    Ok(report)
}

/// Stops the replicas with SIGTERM (checking that they exit 0), then removes the run's queues,
/// exchanges and database, and stops its own MongoDB-wire server.
async fn cleanup(run: &Run) {
    for replica in &run.replicas {
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
    let names = Names::new(run.prefix.clone());
    if let Ok(connection) = amqp::connect(&run.args.endpoints.amqp_url, "chaos cleanup").await
        && let Ok(channel) = connection.create_channel().await
    {
        amqp::topology::delete(&channel, &names, &demo::WORKERS).await;
        let _ = connection.close(200, "cleanup".into()).await;
    }
    if let Ok(store) = crate::store::Store::connect(&run.mongodb_uri, &run.database).await {
        let _ = tokio::time::timeout(Duration::from_secs(10), store.database().drop()).await;
        store.shutdown().await;
    }
    if let Some(mongo) = &run.own_mongodb {
        let mut mongo = mongo.lock().await;
        let _ = mongo.stop().await;
        let _ = std::fs::remove_dir_all(&mongo.dir);
    }
}

fn print_report(args: &ChaosArgs, report: &Report) {
    let faults: Vec<String> = args
        .faults
        .iter()
        .map(|f| format!("{f:?}").to_lowercase())
        .collect();
    println!("chaos report");
    println!("  replicas            {}", args.replicas);
    println!(
        "  faults              {}",
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        }
    );
    println!("  jobs submitted      {}", report.submitted);
    println!("  jobs finished       {}", report.finished);
    println!("  jobs failed         {}", report.failed);
    println!("  jobs lost           {}", report.lost);
    println!("  duplicated outputs  {}", report.duplicated_outputs);
    println!("  wrong outputs       {}", report.wrong_outputs);
    println!(
        "  verdict             {}",
        if report.is_clean() {
            "clean"
        } else {
            "NOT CLEAN"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobId, StageId, TaskId};
    use crate::messages::WorkerRef;

    fn dispatch(worker: &str, inputs: Value) -> StageDispatch {
        StageDispatch {
            task_id: TaskId::derive("r", &StageId::for_index(0), 0, 1),
            job_id: JobId::derive("m", "h"),
            run_id: "r".into(),
            machine_id: "m".into(),
            pipeline_id: "p".into(),
            stage_id: StageId::for_index(0),
            worker: WorkerRef {
                id: worker.into(),
                name: worker.into(),
            },
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            configs: Default::default(),
            attempt: 1,
            deadline: crate::domain::Timestamp::now(),
        }
    }

    fn record(stages: &[(String, Vec<Value>)]) -> Value {
        json!({"stages": stages.iter().map(|(id, o)| json!({"id": id, "outputs": o})).collect::<Vec<_>>()})
    }

    #[test]
    fn the_workers_chain_into_the_expected_record() {
        let one = chaos_outputs(&dispatch("import-csv", json!({"source_file": "f"}))).expect("ok");
        let two = chaos_outputs(&dispatch("trim-csv", json!({"input_csv": one["csv_file"]})))
            .expect("ok");
        let three = chaos_outputs(&dispatch(
            "split-by-sensor",
            json!({"input_csv": two["output_csv"]}),
        ))
        .expect("ok");
        let expected = expected_stages("f");
        assert_eq!(expected[1].1, vec![one]);
        assert_eq!(expected[2].1, vec![two]);
        assert_eq!(Value::Array(expected[3].1.clone()), three);
    }

    #[test]
    fn check_record_counts_duplicates_and_wrong_outputs() {
        let expected = expected_stages("f");
        assert_eq!(check_record(&record(&expected), "f"), (0, 0));
        let mut doubled = expected.clone();
        doubled[4].1.push(Value::Null);
        assert_eq!(check_record(&record(&doubled), "f"), (1, 0));
        let mut swapped = expected.clone();
        swapped[3].1.swap(0, 1);
        assert_eq!(check_record(&record(&swapped), "f"), (0, 2));
        assert_eq!(check_record(&record(&expected[..3]), "f"), (0, 28));
    }

    #[test]
    fn a_report_is_clean_only_without_losses() {
        let clean = Report {
            submitted: 2,
            finished: 2,
            ..Report::default()
        };
        assert!(clean.is_clean());
        assert!(
            !Report {
                lost: 1,
                ..clean.clone()
            }
            .is_clean()
        );
        assert!(
            !Report {
                duplicated_outputs: 1,
                ..clean.clone()
            }
            .is_clean()
        );
        assert!(!Report::default().is_clean());
    }
}
