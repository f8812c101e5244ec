//! The demo behind the README's run command: the seed's four-stage pipeline with real workers
//! on a bundled sample of machine energy readings.
//!
//! `import-csv` checks and normalises the file, `trim-csv` drops the index column,
//! `split-by-sensor` writes one table per sensor (14 outputs), and `sink` summarises each table
//! into its log and returns `null`. File ids name files in a local data directory.

pub mod csv;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use job_manager_worker::{Notice, Task, Worker};

use crate::config::Config;

/// The seed's pipeline id.
pub const PIPELINE_ID: &str = "a34f4ba9-13ad-4ab5-a7e8-d23157513466";
/// The seed's machine id.
pub const MACHINE_ID: &str = "735d39eb6dc94acdadc9d019ff54fb1f";
/// The bundled sample: 8 readings of each of 14 sensors, with CRLF line ends.
pub const SAMPLE_CSV: &str = include_str!("energy.csv");

/// The demo pipeline, as a client registers it.
pub fn pipeline_body() -> Value {
    let file = |name: &str| json!({"name": name, "media_type": "text/csv", "is_file": true});
    json!({
        "name": "Energy data",
        "stages": [
            {"description": "check and normalise the uploaded CSV",
             "worker": {"id": "import-csv", "name": "Import CSV", "configs": {"delimiter": ","},
                        "input": {"type": "single", "fields": [file("source_file")]},
                        "output": {"type": "single", "fields": [file("csv_file")]}},
             "input_map": {"source_file": "init:init_source"}, "timeout_s": 60, "max_attempts": 2},
            {"description": "trim the index column",
             "worker": {"id": "trim-csv", "name": "Trim CSV", "configs": {"column_num": "1"},
                        "input": {"type": "single", "fields": [file("input_csv")]},
                        "output": {"type": "single", "fields": [file("output_csv")]}},
             "input_map": {"input_csv": "csv_file"}, "timeout_s": 60},
            {"description": "split the rows into one table per sensor",
             "worker": {"id": "split-by-sensor", "name": "Split by sensor", "configs": {"column": "sensor"},
                        "input": {"type": "single", "fields": [file("input_csv")]},
                        "output": {"type": "multiple", "fields": [{"name": "unique_id"}, file("result_table")]}},
             "input_map": {"input_csv": "02:output_csv"}, "timeout_s": 60},
            {"description": "summarise each sensor table",
             "worker": {"id": "sink", "name": "Summary sink",
                        "input": {"type": "single", "fields": [file("table"), {"name": "sensor"}]},
                        "output": {"type": "single", "fields": []}},
             "input_map": {"table": "03:result_table", "sensor": "unique_id"}, "timeout_s": 60}
        ]
    })
}

/// Files addressed by 32-hex ids in one directory.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `text` under a new id.
    pub fn put(&self, text: &str) -> Result<String, String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(self.dir.join(&id), text)
            .map_err(|e| format!("cannot write file {id}: {e}"))?;
        Ok(id)
    }

    /// The path of the file with `id`; only 32-hex ids, so an input cannot escape the directory.
    pub fn path(&self, id: &str) -> Result<PathBuf, String> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{id}' is not a file id"));
        }
        Ok(self.dir.join(id))
    }

    pub fn read(&self, id: &str) -> Result<String, String> {
        let path = self.path(id)?;
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read file {id}: {e}"))
    }
}

/// Runs one demo worker's work for a task: its outputs, or why it failed.
pub fn handle(files: &Files, task: &Task) -> Result<Value, String> {
    match task.dispatch().worker.id.as_str() {
        "import-csv" => {
            let delimiter = task
                .config_text("delimiter", ",")
                .chars()
                .next()
                .unwrap_or(',');
            let text = csv::normalize(&files.read(task.input_str("source_file")?)?, delimiter)?;
            Ok(json!({"csv_file": files.put(&text)?}))
        }
        "trim-csv" => {
            let column: usize = task
                .config_text("column_num", "1")
                .parse()
                .map_err(|_| "config 'column_num' must be a number".to_owned())?;
            let text = csv::drop_column(&files.read(task.input_str("input_csv")?)?, column)?;
            Ok(json!({"output_csv": files.put(&text)?}))
        }
        "split-by-sensor" => {
            let column = task.config_text("column", "sensor");
            let tables = csv::split_by(&files.read(task.input_str("input_csv")?)?, &column)?;
            let mut outputs = Vec::with_capacity(tables.len());
            for (key, table) in tables {
                outputs.push(json!({"unique_id": key, "result_table": files.put(&table)?}));
            }
            Ok(Value::Array(outputs))
        }
        "sink" => {
            let sensor = task.input_str("sensor")?;
            let (readings, total) = csv::summarize(&files.read(task.input_str("table")?)?)?;
            task.log(format!("{sensor}: {readings} readings, {total:.2} kWh"));
            Ok(Value::Null)
        }
        other => Err(format!("the demo has no worker '{other}'")),
    }
}

/// Logs a worker's notice: what went wrong as a warning, the rest at debug level.
fn log_notice(notice: &Notice) {
    if notice.is_warning() {
        tracing::warn!(%notice, "demo worker");
    } else {
        tracing::debug!(%notice, "demo worker");
    }
}

/// The ids of the demo's workers.
pub const WORKERS: [&str; 4] = ["import-csv", "trim-csv", "split-by-sensor", "sink"];

/// Starts the demo workers (on the `job-manager-worker` crate, each with a connection of its
/// own to `amqp_url`, reconnecting) under `prefix`, until `shutdown`.
pub fn spawn_workers(
    amqp_url: &str,
    prefix: &str,
    files: Files,
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for worker_id in WORKERS {
        let files = files.clone();
        let handler = move |task: Task| {
            let files = files.clone();
            async move { handle(&files, &task) }
        };
        let worker = Worker::new(worker_id, handler)
            .prefix(prefix)
            .prefetch(8)
            .on_notice(log_notice);
        let (url, stop) = (amqp_url.to_owned(), shutdown.clone());
        set.spawn(async move { worker.serve(&url, stop.cancelled_owned()).await });
    }
    set
}

/// The seed's shape of a job record: exactly its keys.
pub fn seed_shape(record: &Value) -> Value {
    let stages: Vec<Value> = record["stages"]
        .as_array()
        .map(|stages| {
            stages
                .iter()
                .map(|s| json!({"id": s["id"], "outputs": s["outputs"]}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "machine_id": record["machine_id"],
        "status": record["status"],
        "stages": stages,
        "pipeline_id": record["pipeline_id"],
        "created": record["created"],
    })
}

/// Runs the service, the workers and one job of the demo, printing its progress and result.
pub async fn run(config: Config, data_dir: PathBuf) -> anyhow::Result<()> {
    let files = Files::new(&data_dir).context("creating the data directory")?;
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind(config.listen)
        .await
        .context("binding the API address")?;
    let address = listener.local_addr()?;
    let service = tokio::spawn(crate::app::run(config.clone(), listener, shutdown.clone()));
    let mut workers = spawn_workers(
        &config.endpoints.amqp_url,
        &config.prefix,
        files.clone(),
        shutdown.clone(),
    );

    let outcome = drive(&format!("http://{address}{}", config.base_path), &files).await;
    shutdown.cancel();
    while workers.join_next().await.is_some() {}
    service.await.context("service task")??;
    outcome
}

/// Registers the demo pipeline, starts the job, follows it to history and prints the result.
async fn drive(base: &str, files: &Files) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    wait_ready(&client, base).await?;
    register(&client, base).await?;
    let file_id = files.put(SAMPLE_CSV).map_err(anyhow::Error::msg)?;
    let job_id = start_job(&client, base, &file_id).await?;
    println!(
        "job {job_id} started on {} (input file {file_id})",
        files.dir().display()
    );
    let seen = follow(&client, base, &job_id).await?;
    let record: Value = client
        .get(format!("{base}/history/{job_id}"))
        .send()
        .await?
        .json()
        .await?;
    print_stages(&record, seen);
    println!("\nGET {base}/history/{job_id} (the seed's keys):");
    println!("{}", serde_json::to_string_pretty(&seed_shape(&record))?);
    print_outputs(&record, files);
    if record["status"] != "finished" {
        bail!("the job ended as {}: {}", record["status"], record["error"]);
    }
    Ok(())
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(format!("{base}/health/ready")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the service did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers the demo pipeline and its machine.
async fn register(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let machine = json!({"pipeline_id": PIPELINE_ID, "configs": {"delimiter": ","}});
    let puts = [
        (
            "pipeline",
            format!("{base}/pipelines/{PIPELINE_ID}"),
            pipeline_body(),
        ),
        ("machine", format!("{base}/machines/{MACHINE_ID}"), machine),
    ];
    for (what, url, body) in puts {
        let response = client.put(url).json(&body).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "registering the {what}: {status} {}",
                response.text().await?
            );
        }
    }
    Ok(())
}

/// Starts the job on the file `file_id` (the hash is the sample's SHA-512); its id.
async fn start_job(client: &reqwest::Client, base: &str, file_id: &str) -> anyhow::Result<String> {
    let hash: String = Sha512::digest(SAMPLE_CSV.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = client
        .post(format!("{base}/jobs"))
        .json(&json!({"hash": hash, "machine_id": MACHINE_ID, "file_name": file_id}))
        .send()
        .await?;
    let status = response.status();
    let job_id = response.text().await?;
    if status.as_u16() != 201 && status.as_u16() != 409 {
        bail!("starting the job: {status} {job_id}");
    }
    Ok(job_id)
}

/// Prints each stage as it ends until the job leaves the active jobs; how many were printed.
async fn follow(client: &reqwest::Client, base: &str, job_id: &str) -> anyhow::Result<usize> {
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = client.get(format!("{base}/jobs/{job_id}")).send().await?;
        if response.status().as_u16() == 404 {
            return Ok(seen);
        }
        let record: Value = response.json().await?;
        seen = print_stages(&record, seen);
        if Instant::now() > deadline {
            bail!("the job did not end within 120 s; last record: {record}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the stages of `record` after the first `seen`; how many it has printed in all.
fn print_stages(record: &Value, seen: usize) -> usize {
    let stages = record["stages"].as_array().map_or(&[][..], Vec::as_slice);
    for stage in stages.iter().skip(seen) {
        let outputs = stage["outputs"].as_array().map_or(0, Vec::len);
        println!(
            "  stage {} ended with {outputs} output(s)",
            stage["id"].as_str().unwrap_or("?")
        );
    }
    seen.max(stages.len())
}

/// Prints the sink's log and the paths of the sensor tables.
fn print_outputs(record: &Value, files: &Files) {
    let stage = |id: &str| {
        record["stages"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
    };
    if let Some(stage) = stage("04") {
        println!("\nsink log:\n{}", stage["log"].as_str().unwrap_or(""));
    }
    println!("\noutput files:");
    for output in stage("03")
        .and_then(|s| s["outputs"].as_array())
        .into_iter()
        .flatten()
    {
        let table = output["result_table"].as_str().unwrap_or("");
        if let Ok(path) = files.path(table) {
            println!(
                "  {:<24} {}",
                output["unique_id"].as_str().unwrap_or("?"),
                path.display()
            );
        }
    }
}
