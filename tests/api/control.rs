//! Control over running work through the REST API, against the real servers: pause and resume
//! across replicas, and a stage that holds instead of failing.

use std::time::{Duration, Instant};

use job_manager::demo;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_schema, replica_of, spawn_app};

/// Polls `GET /jobs/{id}` until `done` holds, for at most 15 s.
async fn wait_job(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, job) = app.get(&format!("/jobs/{id}")).await;
        if status == 200 && done(&job) {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "job {id} never {what}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn set_status(app: &TestApp, id: &str, status: &str) -> Value {
    let (code, body) = app
        .post_json(&format!("/jobs/{id}"), &json!({ "status": status }))
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["id"], id, "{body}");
    body
}

/// The next job event on `queue`, checked against its schema.
async fn next_event(app: &TestApp, queue: &str) -> Value {
    let event = app
        .take(queue, Duration::from_secs(5))
        .await
        .expect("a job event");
    let event: Value = serde_json::from_slice(&event.delivery.data).expect("json");
    assert_schema("job-event", &event);
    event
}

fn task(job: &Value) -> &Value {
    &job["current_stage"]["tasks"][0]
}

#[tokio::test]
async fn a_job_paused_on_one_replica_records_a_result_taken_by_another_and_waits() {
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    a.register_seed_pipeline().await;
    let events = a.listen_events("job.*").await;
    let id = a.start_job_on(demo::MACHINE_ID, "pause").await;
    let running = a.wait_for_stage(&id, "01").await;
    let task_id = task(&running)["task_id"]
        .as_str()
        .expect("a task")
        .to_owned();
    assert_eq!(next_event(&a, &events).await["status"], "running");

    let body = set_status(&b, &id, "paused").await;
    assert_eq!(body["status"], "paused");
    // Idempotent, from either replica.
    assert_eq!(set_status(&a, &id, "paused").await["status"], "paused");
    assert_eq!(next_event(&a, &events).await["status"], "paused");
    let (_, active) = a.get("/jobs").await;
    assert!(
        active.as_array().expect("ids").contains(&json!(id)),
        "a paused job is active"
    );

    // Replica A takes the result: recorded, but stage 02 is not dispatched.
    let (code, body) = a
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ task_id: {"csv_file": "c.csv"} }),
        )
        .await;
    assert_eq!(
        (code, body["outcome"].clone()),
        (202, json!("recorded")),
        "{body}"
    );
    let paused = wait_job(&b, &id, "recorded the result", |j| {
        task(j)["status"] == "done"
    })
    .await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["current_stage"]["id"], "01");
    assert_schema("job", &paused);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.queue_depth(&a.names.worker_queue("trim-csv")).await, 0);

    // Resumed on A: stage 01 ends and 02 is dispatched.
    assert_eq!(set_status(&a, &id, "running").await["status"], "running");
    assert_eq!(set_status(&b, &id, "running").await["status"], "running");
    assert_eq!(next_event(&a, &events).await["status"], "running");
    let next = b.wait_for_stage(&id, "02").await;
    assert_eq!(next["status"], "running");
    assert_eq!(a.queue_depth(&a.names.worker_queue("trim-csv")).await, 1);

    b.stop().await;
    a.cleanup().await;
}

#[tokio::test]
async fn a_stage_that_holds_queues_retries_while_paused_and_is_released_by_an_operator() {
    let app = spawn_app().await;
    let worker = "held-worker";
    let mut pipeline = crate::helpers::silent_pipeline(worker);
    pipeline["stages"][0]["on_failure"] = json!("hold");
    app.register(&pipeline, "held-machine").await;
    let events = app.listen_events("job.held").await;
    let queue = app.names.worker_queue(worker);
    let id = app.start_job_on("held-machine", "held").await;
    wait_job(&app, &id, "dispatched", |j| {
        task(j)["dispatched"].is_string()
    })
    .await;

    // Paused, the first attempt times out: its retry is queued, not published.
    set_status(&app, &id, "paused").await;
    let queued = wait_job(&app, &id, "queued a retry", |j| {
        task(j)["status"] == "queued"
    })
    .await;
    assert_eq!(
        (queued["status"].clone(), task(&queued)["attempt"].clone()),
        (json!("paused"), json!(2))
    );
    assert_schema("job", &queued);
    assert_eq!(
        app.queue_depth(&queue).await,
        1,
        "only the first attempt was published"
    );

    // Resumed: the retry is published with a fresh deadline; it times out too, and the job
    // is held instead of failed.
    set_status(&app, &id, "running").await;
    wait_job(&app, &id, "dispatched the retry", |j| {
        task(j)["dispatched"].is_string()
    })
    .await;
    assert_eq!(app.queue_depth(&queue).await, 2);
    let held = wait_job(&app, &id, "held", |j| j["status"] == "held").await;
    assert_eq!(task(&held)["status"], "failed");
    let error = held["error"].as_str().expect("the reason");
    assert!(
        error.contains("holds the job") && error.contains("timed out"),
        "{error}"
    );
    assert_eq!(next_event(&app, &events).await["status"], "held");
    let (_, active) = app.get("/jobs?status=held").await;
    assert_eq!(active, json!([id]));

    // Resume gives the held task one fresh attempt; it fails, and holds again.
    set_status(&app, &id, "running").await;
    let again = wait_job(&app, &id, "held again", |j| {
        j["status"] == "held" && task(j)["attempt"] == 3
    })
    .await;
    assert_eq!(app.queue_depth(&queue).await, 3);

    // Posting the task's outputs skips it, and the job finishes with them.
    let task_id = task(&again)["task_id"].as_str().expect("id").to_owned();
    let (code, body) = app
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ task_id: {"out": "by hand"} }),
        )
        .await;
    assert_eq!(
        (code, body["outcome"].clone()),
        (202, json!("recorded")),
        "{body}"
    );
    let record = app.wait_for_history(&id, Duration::from_secs(10)).await;
    assert_schema("history-record", &record);
    assert_eq!(record["status"], "finished");
    let stage = &record["stages"][1];
    assert_eq!(stage["tasks"][0]["status"], "skipped");
    assert_eq!(stage["outputs"], json!([{"out": "by hand"}]));
    assert!(stage["error"].is_null(), "{stage}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_status_change_refuses_what_it_cannot_do_with_a_clear_error() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let id = app.start_job_on(demo::MACHINE_ID, "bad-status").await;
    // An unknown status, an extra key, or a job that ended: clear errors.
    for bad in [
        json!({"status": "PAUSED"}),
        json!({"status": 1}),
        json!({"status": "paused", "x": 1}),
    ] {
        let (code, body) = app.post_json(&format!("/jobs/{id}"), &bad).await;
        assert_eq!(code, 422, "{bad}: {body}");
        assert_eq!(body["error"]["path"], "$.status", "{body}");
    }
    set_status(&app, &id, "aborted").await;
    app.wait_for_history(&id, Duration::from_secs(10)).await;
    for status in ["paused", "running"] {
        let (code, body) = app
            .post_json(&format!("/jobs/{id}"), &json!({ "status": status }))
            .await;
        assert_eq!(
            (code, body["error"]["code"].clone()),
            (409, json!("conflict")),
            "{body}"
        );
    }
    let missing = "AAAAAAAAAAAAAAAAAAAAAA";
    let (code, _) = app
        .post_json(&format!("/jobs/{missing}"), &json!({"status": "paused"}))
        .await;
    assert_eq!(code, 404);
    app.cleanup().await;
}
