//! Memory budgets: a stage that would copy a large output into many tasks fails with the reason
//! before anything is copied, and the replica process stays within its stated memory.

use std::time::{Duration, Instant};

use job_manager::amqp::publisher::{Outgoing, Publisher};
use job_manager::amqp::{self, Names};
use job_manager::demo;
use lapin::options::BasicGetOptions;
use serde_json::{Map, Value, json};

use crate::helpers::{amqp_url, mongodb_uri, spawn_app_with};

/// The peak resident memory the README states for this case.
const PEAK_RSS_BUDGET_KIB: u64 = 256 * 1024;

/// A replica as its own process, so its memory is its own.
struct Replica {
    child: tokio::process::Child,
    base: String,
}

impl Replica {
    async fn start(database: &str, prefix: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_job-manager"))
            .arg("serve")
            .env("JOB_MANAGER_AMQP_URL", amqp_url())
            .env("JOB_MANAGER_MONGODB_URI", mongodb_uri())
            .env("JOB_MANAGER_DATABASE", database)
            .env("JOB_MANAGER_PREFIX", prefix)
            .env("JOB_MANAGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let base = format!("http://127.0.0.1:{port}/job-manager");
        let started = Instant::now();
        while !reqwest::get(format!("{base}/health/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(started.elapsed() < Duration::from_secs(30), "not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, base }
    }

    /// Peak resident set size so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    async fn put(&self, path: &str, body: &Value) {
        let client = reqwest::Client::new();
        let response = client
            .put(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await;
        let status = response.expect("put").status().as_u16();
        assert!(status == 200 || status == 201, "{path}: {status}");
    }
}

/// Answers the next dispatch on `worker`'s queue with `outputs`.
async fn answer(names: &Names, worker: &str, outputs: Value) {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no dispatch for {worker}"
        );
        // A connection per try: a get from a queue not declared yet closes its channel, and
        // one from a quorum queue still starting can close the whole connection.
        let connection = amqp::connect(&amqp_url(), "budget-test")
            .await
            .expect("amqp");
        let got = match connection.create_channel().await {
            Ok(channel) => channel
                .basic_get(
                    names.worker_queue(worker).into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .ok()
                .flatten(),
            Err(_) => None,
        };
        if let Some(message) = got {
            let dispatch: Value = serde_json::from_slice(&message.delivery.data).expect("dispatch");
            let publisher = Publisher::open(&connection).await.expect("publisher");
            let result = json!({"task_id": dispatch["task_id"], "job_id": dispatch["job_id"], "outputs": outputs});
            let message =
                Outgoing::json("", names.results_queue(), "stage-result", &result).expect("encode");
            publisher.publish(message).await.expect("publish");
            let _ = connection.close(200, "answered".into()).await;
            break;
        }
        let _ = connection.close(200, "polled".into()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_wide_stage_over_a_large_output_fails_with_the_reason_within_the_memory_budget() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let (database, prefix) = (format!("jm_test_{id}"), format!("jm-test-{id}"));
    let mut replica = Replica::start(&database, &prefix).await;
    // The demo's shape, with stage 04 also reading stage 01's output (as the seed's does).
    let mut pipeline = demo::pipeline_body();
    let sink = &mut pipeline["stages"][3];
    sink["worker"]["input"]["fields"]
        .as_array_mut()
        .expect("fields")
        .push(json!({"name": "source"}));
    sink["input_map"]["source"] = json!("01:csv_file");
    replica
        .put(&format!("/pipelines/{}", demo::PIPELINE_ID), &pipeline)
        .await;
    let machine = json!({"pipeline_id": demo::PIPELINE_ID});
    replica
        .put(&format!("/machines/{}", demo::MACHINE_ID), &machine)
        .await;
    let created = reqwest::Client::new()
        .post(format!("{}/jobs", replica.base))
        .json(&json!({"hash": "wide", "machine_id": demo::MACHINE_ID, "file_name": "f"}))
        .send()
        .await
        .expect("post job");
    assert_eq!(created.status().as_u16(), 201);
    let job = created.text().await.expect("id");

    let names = Names::new(prefix.clone());
    // Stage 01 answers with about 3.9 MB in one field; stage 04 copies that field (`source`,
    // mapped to 01's `csv_file`) into each of its tasks, one per output of stage 03.
    let chunk = "x".repeat(60 * 1024);
    let large: Map<String, Value> = (0..64)
        .map(|i| (format!("part{i}"), json!(chunk)))
        .collect();
    answer(&names, "import-csv", json!({"csv_file": large})).await;
    answer(&names, "trim-csv", json!({"output_csv": "t"})).await;
    let tables: Vec<Value> = (0..300)
        .map(|i| json!({"unique_id": format!("s{i}"), "result_table": format!("t{i}")}))
        .collect();
    answer(&names, "split-by-sensor", json!(tables)).await;

    let client = reqwest::Client::new();
    let started = Instant::now();
    let record: Value = loop {
        let response = client
            .get(format!("{}/history/{job}", replica.base))
            .send()
            .await;
        if let Ok(response) = response
            && response.status().is_success()
        {
            break response.json().await.expect("json");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "job never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().expect("reason");
    assert!(
        error.contains("stage '04' cannot start") && error.contains("300 task(s)"),
        "{error}"
    );
    // 300 copies of 3.9 MB would be over 1.1 GB.
    let peak = replica.peak_rss_kib();
    println!("replica peak RSS {} MiB", peak / 1024);
    assert!(peak < PEAK_RSS_BUDGET_KIB, "peak RSS {} MiB", peak / 1024);

    let _ = replica.child.start_kill();
    let _ = replica.child.wait().await;
    // Leave nothing behind.
    let app = spawn_app_with(
        |config| {
            config.database = database;
            config.prefix = prefix;
        },
        true,
    )
    .await;
    app.cleanup().await;
}
