//! `spawn_app()` and the typed helpers the tests share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use job_manager::amqp::{self, Names};
use job_manager::config::Config;
use job_manager::demo::{self, Files};
use job_manager::store::Store;
use lapin::options::BasicGetOptions;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub fn amqp_url() -> String {
    std::env::var("JOB_MANAGER_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn mongodb_uri() -> String {
    std::env::var("JOB_MANAGER_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// A running service with its own database and queue prefix.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub names: Names,
    pub store: Store,
    pub amqp: Arc<lapin::Connection>,
    pub files: Files,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    workers: Option<(CancellationToken, JoinSet<()>)>,
    /// Worker ids of pipelines registered with [`TestApp::register`], for cleanup.
    worker_ids: Arc<std::sync::Mutex<Vec<String>>>,
    /// Deletes the test's queues, exchanges and database if it ends without
    /// [`TestApp::cleanup`].
    leftovers: Leftovers,
    _data: tempdir::TempDir,
}

/// Deletes the queues (those of `worker_ids` too) and exchanges under `names`, best effort. The
/// service never deletes its topology; the tests do it themselves, with lapin.
pub async fn delete_topology(channel: &lapin::Channel, names: &Names, worker_ids: &[&str]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let mut queues = names.service_queues();
    queues.extend(worker_ids.iter().map(|w| names.worker_queue(w)));
    for queue in queues {
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }
    let exchanges = [
        names.dispatch_exchange(),
        names.events_exchange(),
        names.dead_exchange(),
    ];
    for exchange in exchanges {
        let _ = channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// The worker ids a test's queues may be named after: the demo's, the CLI test's, and those of
/// the pipelines it registered.
fn known_worker_ids(registered: &std::sync::Mutex<Vec<String>>) -> Vec<String> {
    let mut workers: Vec<String> = demo::WORKERS.iter().map(|w| (*w).to_owned()).collect();
    workers.push("cli-worker".to_owned());
    workers.extend(registered.lock().map(|ids| ids.clone()).unwrap_or_default());
    workers
}

/// A guard that deletes a test's queues, exchanges and database when it is dropped armed: when
/// the test panicked before [`TestApp::cleanup`] (or [`TestApp::stop`]) disarmed it.
struct Leftovers {
    names: Names,
    worker_ids: Arc<std::sync::Mutex<Vec<String>>>,
    /// The MongoDB URI and the test's database.
    database: (String, String),
    /// The service's shutdown: stopped first, so that it does not declare its queues again
    /// when it sees them deleted.
    shutdown: CancellationToken,
    armed: bool,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.shutdown.cancel();
        let (names, workers) = (self.names.clone(), known_worker_ids(&self.worker_ids));
        let (uri, database) = self.database.clone();
        // Drop cannot await and runs inside the test's runtime: delete from a thread with a
        // runtime of its own.
        let deleting = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(connection) =
                    amqp::connect(&amqp_url(), "job-manager-tests cleanup").await
                {
                    if let Ok(channel) = connection.create_channel().await {
                        let workers: Vec<&str> = workers.iter().map(String::as_str).collect();
                        delete_topology(&channel, &names, &workers).await;
                        let _ = channel.close(200, "cleanup".into()).await;
                    }
                    let _ = connection.close(200, "cleanup".into()).await;
                }
                if let Ok(store) = Store::connect(&uri, &database).await {
                    let drop = store.database().drop();
                    let _ = tokio::time::timeout(Duration::from_secs(10), drop).await;
                    store.shutdown().await;
                }
            });
        });
        let _ = deleting.join();
    }
}

/// A scratch directory removed on drop.
mod tempdir {
    pub struct TempDir(pub std::path::PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::create_dir_all(&path);
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, true).await
}

/// A second replica on the same database and queues as `app`.
pub async fn replica_of(app: &TestApp) -> TestApp {
    let database = app.store.database().name().to_owned();
    let prefix = app.names.prefix().to_owned();
    spawn_app_with(
        move |config| {
            config.database = database;
            config.prefix = prefix;
        },
        true,
    )
    .await
}

/// Like [`spawn_app`], with a chance to change the config; `wait_ready` waits for readiness,
/// otherwise only for liveness.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config), wait_ready: bool) -> TestApp {
    if std::env::var_os("RUST_LOG").is_some() {
        job_manager::telemetry::init(job_manager::config::LogFormat::Text);
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let mut config = Config::defaults();
    config.endpoints.amqp_url = amqp_url();
    config.endpoints.mongodb_uri = mongodb_uri();
    config.database = format!("jm_test_{id}");
    config.prefix = format!("jm-test-{id}");
    config.sweep_interval_s = 1;
    config.dispatch_grace_s = 2;
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(job_manager::app::run(
        config.clone(),
        listener,
        shutdown.clone(),
    ));
    let base = format!("http://{address}{}", config.base_path);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let started = Instant::now();
    loop {
        let probe = if wait_ready { "ready" } else { "live" };
        if let Ok(response) = client.get(format!("{base}/health/{probe}")).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(!server.is_finished(), "the service stopped during start-up");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "service not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = Store::connect(&config.endpoints.mongodb_uri, &config.database)
        .await
        .expect("store");
    let connection = amqp::connect(&config.endpoints.amqp_url, "job-manager-tests")
        .await
        .expect("amqp");
    let data = tempdir::TempDir::new(&format!("job-manager-test-{id}"));
    let files = Files::new(&data.0).expect("files");
    let names = Names::new(config.prefix.clone());
    let worker_ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let leftovers = Leftovers {
        names: names.clone(),
        worker_ids: worker_ids.clone(),
        database: (
            config.endpoints.mongodb_uri.clone(),
            config.database.clone(),
        ),
        shutdown: shutdown.clone(),
        armed: true,
    };
    TestApp {
        base,
        client,
        names,
        store,
        amqp: Arc::new(connection),
        files,
        shutdown,
        server,
        workers: None,
        worker_ids,
        leftovers,
        _data: data,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers `pipeline` under a new id and `machine_id` to run it.
    pub async fn register(&self, pipeline: &Value, machine_id: &str) -> String {
        let (status, body) = self.post_json("/pipelines", pipeline).await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().expect("id").to_owned();
        for stage in pipeline["stages"].as_array().into_iter().flatten() {
            if let (Some(worker), Ok(mut ids)) =
                (stage["worker"]["id"].as_str(), self.worker_ids.lock())
            {
                ids.push(worker.to_owned());
            }
        }
        let response = self
            .send(
                reqwest::Method::PUT,
                &format!("/machines/{machine_id}"),
                Some(&json!({"pipeline_id": id})),
                None,
            )
            .await;
        assert_eq!(response.status().as_u16(), 201);
        id
    }

    /// Registers the seed-shaped demo pipeline and machine.
    pub async fn register_seed_pipeline(&self) {
        let response = self
            .client
            .put(self.url(&format!("/pipelines/{}", demo::PIPELINE_ID)))
            .json(&demo::pipeline_body())
            .send()
            .await
            .expect("put pipeline");
        assert_eq!(
            response.status().as_u16(),
            201,
            "{:?}",
            response.text().await
        );
        let response = self
            .client
            .put(self.url(&format!("/machines/{}", demo::MACHINE_ID)))
            .json(&json!({"pipeline_id": demo::PIPELINE_ID, "configs": {"delimiter": ","}}))
            .send()
            .await
            .expect("put machine");
        assert_eq!(response.status().as_u16(), 201);
    }

    /// Starts the demo workers over AMQP (on the `job-manager-worker` crate).
    pub fn start_workers(&mut self) {
        let token = CancellationToken::new();
        let set = demo::spawn_workers(
            &amqp_url(),
            self.names.prefix(),
            self.files.clone(),
            token.clone(),
        );
        self.workers = Some((token, set));
    }

    /// Starts a job on the sample file; returns the id.
    pub async fn start_job(&self, hash: &str) -> String {
        let file = self.files.put(demo::SAMPLE_CSV).expect("file");
        let response = self
            .client
            .post(self.url("/jobs"))
            .json(&json!({"hash": hash, "machine_id": demo::MACHINE_ID, "file_name": file}))
            .send()
            .await
            .expect("post job");
        assert_eq!(response.status().as_u16(), 201);
        response.text().await.expect("id")
    }

    /// The active job `id` as stored (panics when there is none).
    pub async fn stored_job(&self, id: &job_manager::domain::JobId) -> job_manager::domain::Job {
        self.store
            .load_job(id)
            .await
            .expect("load")
            .expect("an active job")
    }

    /// Starts a job for `machine_id` on a made-up file name; returns the id.
    pub async fn start_job_on(&self, machine_id: &str, hash: &str) -> String {
        let body = json!({"hash": hash, "machine_id": machine_id, "file_name": "f"});
        let response = self
            .send(
                reqwest::Method::POST,
                "/jobs",
                Some(&body),
                Some("application/json"),
            )
            .await;
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("the id").to_owned()
    }

    /// Sends `method path` with an optional JSON body and `Accept` header.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("get");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `GET /history/{id}` answers 200.
    pub async fn wait_for_history(&self, id: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.get(&format!("/history/{id}")).await;
            if status == 200 {
                return body;
            }
            assert!(
                started.elapsed() < limit,
                "job {id} not in history after {limit:?}; /jobs says {:?}",
                self.get(&format!("/jobs/{id}")).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `GET /history/{id}` shows the run `run_id` on top.
    pub async fn wait_for_history_of_run(&self, id: &str, run_id: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.get(&format!("/history/{id}")).await;
            if status == 200 && body["run_id"] == run_id {
                return body;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "run {run_id} of job {id} not in history: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the job's stage in flight has `id` and every task is dispatched.
    pub async fn wait_for_stage(&self, job: &str, stage: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.get(&format!("/jobs/{job}")).await;
            if status == 200
                && body["current_stage"]["id"] == stage
                && body["current_stage"]["tasks"]
                    .as_array()
                    .is_some_and(|t| t.iter().all(|t| t.get("dispatched").is_some()))
            {
                return body;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "stage {stage} never in flight: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Answers every task of stage `stage` of job `id` over HTTP with `outputs`, once the stage
    /// is in flight.
    pub async fn answer_stage(&self, id: &str, stage: &str, outputs: Value) {
        let job = self.wait_for_stage(id, stage).await;
        for task in job["current_stage"]["tasks"].as_array().expect("tasks") {
            let task_id = task["task_id"].as_str().expect("task id");
            let (code, body) = self
                .post_json(&format!("/jobs/{id}"), &json!({ task_id: outputs.clone() }))
                .await;
            assert_eq!(code, 202, "{body}");
        }
    }

    /// The messages ready in `queue`; 0 when nothing declared it yet (no dispatch went there).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let channel = self.amqp.create_channel().await.expect("channel");
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
            .await;
        let _ = channel.close(200, "done".into()).await;
        declared.map_or(0, |q| q.message_count())
    }

    /// Takes one message from `queue`, waiting up to `limit`.
    pub async fn take(
        &self,
        queue: &str,
        limit: Duration,
    ) -> Option<lapin::message::BasicGetMessage> {
        let channel = self.amqp.create_channel().await.expect("channel");
        let started = Instant::now();
        loop {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if got.is_some() || started.elapsed() > limit {
                let _ = channel.close(200, "done".into()).await;
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Declares a queue bound to the events exchange with `binding` (e.g. `job.aborted`, `#`).
    pub async fn listen_events(&self, binding: &str) -> String {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let channel = self.amqp.create_channel().await.expect("channel");
        let queue = format!(
            "{}.test-events.{}",
            self.names.prefix(),
            uuid::Uuid::new_v4().simple()
        );
        // Exclusive: removed with the test's connection, and readable from its other channels.
        let options = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.clone().into(), options, FieldTable::default())
            .await
            .expect("declare");
        channel
            .queue_bind(
                queue.clone().into(),
                self.names.events_exchange().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        let _ = channel.close(200, "bound".into()).await;
        queue
    }

    /// Waits until `queue` holds no ready message, then a little longer for the one in hand.
    pub async fn wait_until_consumed(&self, queue: &str) {
        let channel = self.amqp.create_channel().await.expect("channel");
        let started = Instant::now();
        loop {
            let declared = channel
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .expect("passive declare");
            if declared.message_count() == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{queue} not drained"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = channel.close(200, "done".into()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Stops the workers and the service, and asserts the service stopped cleanly.
    async fn stop_service(&mut self) {
        if let Some((token, mut set)) = self.workers.take() {
            token.cancel();
            while set.join_next().await.is_some() {}
        }
        self.shutdown.cancel();
        let served = tokio::time::timeout(Duration::from_secs(30), &mut self.server).await;
        assert!(
            matches!(served, Ok(Ok(Ok(())))),
            "service did not stop cleanly: {served:?}"
        );
    }

    /// Stops a replica that shares its queues and database with another [`TestApp`], leaving
    /// them for that one's [`TestApp::cleanup`].
    pub async fn stop(mut self) {
        self.leftovers.armed = false;
        self.stop_service().await;
        let _ = self.amqp.close(200, "stopped".into()).await;
        self.store.shutdown().await;
    }

    /// Stops everything and removes the test's queues, exchanges and database.
    pub async fn cleanup(mut self) {
        self.stop_service().await;
        let channel = self.amqp.create_channel().await.expect("channel");
        let workers = known_worker_ids(&self.worker_ids);
        let workers: Vec<&str> = workers.iter().map(String::as_str).collect();
        delete_topology(&channel, &self.names, &workers).await;
        self.leftovers.armed = false;
        let _ = channel.close(200, "cleanup".into()).await;
        let _ = self.amqp.close(200, "cleanup".into()).await;
        let _ = self.store.database().drop().await;
        self.store.shutdown().await;
    }
}

/// A one-stage pipeline whose worker `worker` nobody serves: 1 s timeout, 2 attempts.
pub fn silent_pipeline(worker: &str) -> Value {
    json!({"name": worker, "stages": [{
        "worker": {"id": worker, "name": "Never answers",
                   "input": {"type": "single", "fields": [{"name": "file"}]},
                   "output": {"type": "single", "fields": [{"name": "out"}]}},
        "input_map": {"file": "init:init_source"}, "timeout_s": 1, "max_attempts": 2}]})
}

/// The seed's shape of a record: `id` and `outputs` of each stage.
pub fn stage_outputs(record: &Value) -> Vec<(String, Vec<Value>)> {
    record["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["outputs"].as_array().expect("outputs").clone(),
            )
        })
        .collect()
}

/// Asserts that `value` satisfies the committed schema `schemas/<name>.schema.json`.
pub fn assert_schema(name: &str, value: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path).expect("schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value}");
}

/// The value of the metric line starting with `series` (name and labels) in `/metrics`.
pub async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Waits up to 10 s for the metric `series` to reach `at_least`; returns its last value.
pub async fn wait_metric(app: &TestApp, series: &str, at_least: f64) -> Option<f64> {
    let started = Instant::now();
    loop {
        let value = metric(app, series).await;
        if value.is_some_and(|v| v >= at_least) || started.elapsed() > Duration::from_secs(10) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
