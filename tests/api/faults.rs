//! Timeouts, duplicates, the sweep, readiness and shutdown.

use std::time::{Duration, Instant};

use job_manager::amqp::publisher::{Outgoing, Publisher};
use job_manager::demo;
use job_manager::domain::{Job, JobStatus, PipelineBody, Timestamp};
use serde_json::{Value, json};

use crate::helpers::{silent_pipeline, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_task_that_never_answers_is_retried_then_fails_the_job_with_a_timeout() {
    let app = spawn_app().await;
    app.register(&silent_pipeline("silent"), "quiet-machine")
        .await;
    let id = app.start_job_on("quiet-machine", "h").await;

    let record = app.wait_for_history(&id, Duration::from_secs(20)).await;
    assert_eq!(record["status"], "failed", "{record}");
    let stage = &record["stages"][1];
    assert_eq!(stage["id"], "01");
    let error = stage["error"].as_str().expect("stage error");
    assert!(
        error.contains("timed out") && error.contains("after 2 attempt(s)"),
        "{error}"
    );
    assert!(
        record["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out"))
    );
    assert_eq!(stage["tasks"][0]["attempt"], 2);
    let timed_out = crate::helpers::wait_metric(
        &app,
        "job_manager_tasks_timed_out_total{worker=\"silent\"}",
        2.0,
    )
    .await;
    assert!(timed_out.is_some_and(|v| v >= 2.0), "{timed_out:?}");
    let retried = crate::helpers::wait_metric(
        &app,
        "job_manager_tasks_retried_total{worker=\"silent\"}",
        1.0,
    )
    .await;
    assert!(retried.is_some_and(|v| v >= 1.0), "{retried:?}");
    assert_eq!(stage["tasks"][0]["status"], "failed");

    // Both attempts were dispatched, each with its own task id and attempt number.
    let queue = app.names.worker_queue("silent");
    let mut attempts = Vec::new();
    for _ in 0..2 {
        let message = app
            .take(&queue, Duration::from_secs(5))
            .await
            .expect("a dispatch");
        let dispatch: Value = serde_json::from_slice(&message.delivery.data).expect("json");
        attempts.push((
            dispatch["attempt"].as_u64(),
            dispatch["task_id"].as_str().map(str::to_owned),
        ));
    }
    assert_eq!(attempts[0].0, Some(1));
    assert_eq!(attempts[1].0, Some(2));
    assert_ne!(attempts[0].1, attempts[1].1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_result_delivered_twice_changes_nothing_the_second_time() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let id = app.start_job("twice").await;
    let running = app.wait_for_stage(&id, "01").await;
    let task_id = running["current_stage"]["tasks"][0]["task_id"].clone();
    let result =
        json!({"task_id": task_id, "job_id": id, "outputs": {"csv_file": "c"}, "error": null});
    let publisher = Publisher::open(&app.amqp).await.expect("publisher");
    let message =
        || Outgoing::json("", app.names.results_queue(), "stage-result", &result).expect("encode");
    publisher.publish(message()).await.expect("publish");
    let after_first = app.wait_for_stage(&id, "02").await;
    let job_id = job_manager::domain::JobId::parse(&id).expect("id");
    let version = app.stored_job(&job_id).await.version;

    publisher.publish(message()).await.expect("publish");
    app.wait_until_consumed(&app.names.results_queue()).await;
    // The duplicate was taken and judged a duplicate before the record is compared.
    let ignored = crate::helpers::wait_metric(
        &app,
        "job_manager_results_ignored_total{reason=\"duplicate result\"}",
        1.0,
    )
    .await;
    assert!(ignored.is_some_and(|v| v >= 1.0), "{ignored:?}");
    let (_, after_second) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(after_second, after_first);
    let stored = app.stored_job(&job_id).await;
    assert_eq!(stored.version, version, "a duplicate must not write");
    assert_eq!(stored.stages[1].outputs, vec![json!({"csv_file": "c"})]);
    app.cleanup().await;
}

fn seed_job(hash: &str, created: Timestamp) -> Job {
    let body: PipelineBody = serde_json::from_value(demo::pipeline_body()).expect("pipeline body");
    Job::new(
        demo::MACHINE_ID,
        hash,
        "file",
        demo::PIPELINE_ID,
        body.stages,
        Default::default(),
        uuid::Uuid::new_v4().simple().to_string(),
        created,
    )
}

#[tokio::test]
async fn the_sweep_finishes_interrupted_archives_starts_and_dispatches() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let long_ago = Timestamp::from(chrono::Utc::now() - chrono::TimeDelta::seconds(60));

    // A job that ended but whose move to history was interrupted.
    let mut ended = seed_job("ended", long_ago);
    ended.status = JobStatus::Finished;
    ended.completed = Some(long_ago);
    app.store.insert_job(&ended).await.expect("insert");
    let record = app
        .wait_for_history(ended.id.as_str(), Duration::from_secs(10))
        .await;
    assert_eq!(record["status"], "finished");
    // The record is written first, then the job leaves `jobs`: wait for the second step.
    let gone = Instant::now() + Duration::from_secs(10);
    while app.get(&format!("/jobs/{}", ended.id)).await.0 != 404 {
        assert!(Instant::now() < gone, "the archived job is still in jobs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A job recorded as pending whose start was interrupted.
    let pending = seed_job("pending", long_ago);
    app.store.insert_job(&pending).await.expect("insert");
    let running = app.wait_for_stage(pending.id.as_str(), "01").await;
    assert_eq!(running["status"], "running");
    let queue = app.names.worker_queue("import-csv");
    let first = app
        .take(&queue, Duration::from_secs(5))
        .await
        .expect("dispatched");

    // A dispatch recorded but never confirmed (as after a crash before the publish).
    let before = app.stored_job(&pending.id).await;
    let mut job = before.clone();
    let stage = job.current_stage.as_mut().expect("stage in flight");
    stage.tasks[0].dispatched = None;
    stage.tasks[0].issued = long_ago;
    job.version += 1;
    assert!(
        app.store
            .compare_and_set(&before, &job)
            .await
            .expect("write")
    );
    let again = app
        .take(&queue, Duration::from_secs(10))
        .await
        .expect("re-published");
    assert_eq!(
        again.delivery.data, first.delivery.data,
        "the same task is published again"
    );
    let started = Instant::now();
    loop {
        let job = app.stored_job(&pending.id).await;
        if job
            .current_stage
            .as_ref()
            .is_some_and(|s| s.tasks[0].dispatched.is_some())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "re-publish not marked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.cleanup().await;
}

#[tokio::test]
async fn readiness_fails_while_mongodb_is_unreachable_and_liveness_does_not() {
    let app = spawn_app_with(
        |config| {
            config.endpoints.mongodb_uri =
                "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500".into()
        },
        false,
    )
    .await;
    let (status, body) = app.get("/health/live").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["mongodb"], "unavailable");
    let (status, body) = app.get("/jobs").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("27017"),
        "no internals in 5xx bodies"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn sigterm_stops_the_service_within_the_grace_and_exits_zero() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_job-manager"))
        .arg("serve")
        .env("JOB_MANAGER_AMQP_URL", crate::helpers::amqp_url())
        .env("JOB_MANAGER_MONGODB_URI", crate::helpers::mongodb_uri())
        .env("JOB_MANAGER_DATABASE", format!("jm_test_{id}"))
        .env("JOB_MANAGER_PREFIX", format!("jm-test-{id}"))
        .env("JOB_MANAGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/job-manager/health/ready"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let stopping = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(25), child.wait())
        .await
        .expect("stops in time")
        .expect("status");
    assert!(status.success(), "exit status {status}");
    assert!(stopping.elapsed() < Duration::from_secs(25));
    // Leave nothing behind.
    let app = spawn_app_with(
        |config| {
            config.database = format!("jm_test_{id}");
            config.prefix = format!("jm-test-{id}");
        },
        true,
    )
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_job_whose_record_would_outgrow_the_document_cap_fails_instead_of_sticking() {
    let app = spawn_app().await;
    let field = |name: &str| json!({"name": name});
    let pipeline = json!({"name": "bulky", "stages": [
        {"worker": {"id": "fan", "name": "fan", "input": {"type": "single", "fields": [field("file")]},
                    "output": {"type": "multiple", "fields": [field("item")]}},
         "input_map": {"file": "init:init_source"}},
        {"worker": {"id": "bulky", "name": "bulky", "input": {"type": "single", "fields": [field("item")]},
                    "output": {"type": "multiple", "fields": [field("blob")]}},
         "input_map": {"item": "item"}}]});
    app.register(&pipeline, "bulky-machine").await;
    let id = app.start_job_on("bulky-machine", "big").await;
    let publisher = Publisher::open(&app.amqp).await.expect("publisher");
    let answer = |dispatch: &[u8], outputs: Value| {
        let dispatch: Value = serde_json::from_slice(dispatch).expect("dispatch");
        let result = json!({"task_id": dispatch["task_id"], "job_id": dispatch["job_id"], "outputs": outputs});
        Outgoing::json("", app.names.results_queue(), "stage-result", &result).expect("encode")
    };
    let fan = app
        .take(&app.names.worker_queue("fan"), Duration::from_secs(10))
        .await
        .expect("the fan task");
    let items: Vec<Value> = (0..6).map(|i| json!({"item": i})).collect();
    publisher
        .publish(answer(&fan.delivery.data, Value::Array(items)))
        .await
        .expect("publish");
    // Six results of about 3.5 MiB each (under the 4 MiB a result may take): five of them
    // make the record larger than a document may be.
    let blob = "x".repeat(60 * 1024);
    let outputs = Value::Array((0..58).map(|_| json!({"blob": blob})).collect());
    app.wait_for_stage(&id, "02").await;
    for _ in 0..6 {
        let task = app
            .take(&app.names.worker_queue("bulky"), Duration::from_secs(10))
            .await
            .expect("a bulky task");
        publisher
            .publish(answer(&task.delivery.data, outputs.clone()))
            .await
            .expect("publish");
    }
    let record = app.wait_for_history(&id, Duration::from_secs(60)).await;
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().expect("a reason");
    assert!(
        error.contains("MiB") && error.contains("database"),
        "{error}"
    );
    assert_eq!(record["stages"][2]["id"], "02");
    assert_eq!(record["stages"][2]["error"], record["error"]);
    // Nothing is left behind: every result was taken, none dead-lettered or requeued for ever.
    app.wait_until_consumed(&app.names.results_queue()).await;
    assert_eq!(
        crate::helpers::metric(&app, "job_manager_messages_dead_lettered_total").await,
        None
    );
    let (status, _) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(status, 404, "the failed job left the active list");
    app.cleanup().await;
}

#[tokio::test]
async fn a_copy_behind_the_store_neither_loses_nor_ignores_a_result() {
    use job_manager::domain::{Decision, Event, TaskResult, apply};
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let id = app.start_job("behind").await;
    // The replica wrote the job (stage 01 in flight) and keeps that copy for the next event.
    app.wait_for_stage(&id, "01").await;
    let job_id = job_manager::domain::JobId::parse(&id).expect("id");
    let before = app.stored_job(&job_id).await;
    // Another replica records stage 01's result: the store moves on to stage 02.
    let task_id = before.current_stage.as_ref().expect("stage").tasks[0]
        .task_id
        .clone();
    let event = Event::Result(TaskResult {
        task_id,
        run_id: None,
        outputs: vec![json!({"csv_file": "c"})],
        log: None,
        error: None,
    });
    let Decision::Apply { job: after, .. } = apply(&before, &event, Timestamp::now()) else {
        panic!("the result applies");
    };
    assert!(
        app.store
            .compare_and_set(&before, &after)
            .await
            .expect("write")
    );
    let stage_two = after.current_stage.as_ref().expect("stage 02");
    assert_eq!(stage_two.id.as_str(), "02");
    // A result for stage 02 reaches this replica, whose copy still has stage 01 in flight: it
    // must be recorded, not ignored as a task the copy does not know.
    let result = json!({ stage_two.tasks[0].task_id.as_str(): {"output_csv": "o"} });
    let (status, body) = app.post_json(&format!("/jobs/{id}"), &result).await;
    assert_eq!(status, 202, "{body}");
    let now = app.wait_for_stage(&id, "03").await;
    assert_eq!(now["stages"][2]["outputs"], json!([{"output_csv": "o"}]));
    let stored = app.stored_job(&job_id).await;
    assert_eq!(stored.version, after.version + 1);
    app.cleanup().await;
}
