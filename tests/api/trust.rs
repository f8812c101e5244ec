//! What hostile or careless workers and clients send: values the database cannot store, poison
//! results, broken jobs beside healthy ones, replicas whose clocks are off.

use std::time::Duration;

use job_manager::amqp::broker::RabbitBroker;
use job_manager::amqp::publisher::{Outgoing, Publisher};
use job_manager::clock::Clock;
use job_manager::coordinator::Coordinator;
use job_manager::demo;
use job_manager::sweep::{Resume, sweep_once};
use serde_json::{Value, json};

use crate::helpers::{metric, silent_pipeline, spawn_app, spawn_app_with, wait_metric};

const BEYOND_I64: u64 = u64::MAX;

#[tokio::test]
async fn values_the_database_cannot_store_are_refused_with_their_path() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let machine = json!({"pipeline_id": demo::PIPELINE_ID, "configs": {"a": {"seed": BEYOND_I64}}});
    let response = app
        .send(
            reqwest::Method::PUT,
            "/machines/m-big",
            Some(&machine),
            None,
        )
        .await;
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["path"], "$.configs.a.seed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("64-bit")
    );

    let mut pipeline = demo::pipeline_body();
    pipeline["stages"][1]["worker"]["configs"] = json!({"n": [1, BEYOND_I64]});
    let (status, body) = app.post_json("/pipelines", &pipeline).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["path"], "$.stages[1].worker.configs.n[1]");

    let id = app.start_job_on(demo::MACHINE_ID, "big-result").await;
    let job = app.wait_for_stage(&id, "01").await;
    let task = job["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("task");
    let (status, body) = app
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ task: {"csv_file": "c", "hash": BEYOND_I64} }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["path"], format!("$.{task}.hash"));
    // Nothing was recorded: the attempt is still open.
    let (_, after) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(after["current_stage"], job["current_stage"]);
    app.cleanup().await;
}

#[tokio::test]
async fn poison_results_beyond_the_prefetch_fail_their_attempt_and_the_next_job_still_finishes() {
    let mut app = spawn_app_with(|config| config.prefetch = 4, true).await;
    app.register_seed_pipeline().await;
    let id = app.start_job_on(demo::MACHINE_ID, "poison").await;
    let job = app.wait_for_stage(&id, "01").await;
    let task = job["current_stage"]["tasks"][0]["task_id"].clone();
    // Ten results holding an integer BSON cannot store: more than the replica's prefetch.
    let publisher = Publisher::open(&app.amqp).await.expect("publisher");
    let poison =
        json!({"task_id": task, "job_id": id, "outputs": {"csv_file": "c", "sensor": BEYOND_I64}});
    for _ in 0..10 {
        let message =
            Outgoing::json("", app.names.results_queue(), "stage-result", &poison).expect("encode");
        publisher.publish(message).await.expect("publish");
    }
    app.wait_until_consumed(&app.names.results_queue()).await;
    // The first failed the attempt with the reason; the rest are of a superseded attempt.
    let (_, job) = app.get(&format!("/jobs/{id}")).await;
    let attempt = &job["current_stage"]["tasks"][0];
    assert_eq!(attempt["attempt"], 2, "{job}");
    let error = attempt["error"]
        .as_str()
        .expect("the failed attempt's reason");
    assert!(
        error.contains("outside the signed 64-bit range") && error.contains(".sensor"),
        "{error}"
    );
    assert!(
        app.take(&app.names.dead_queue(), Duration::from_millis(200))
            .await
            .is_none(),
        "well-formed results are not dead-lettered"
    );
    // The replica still serves everyone else: a normal job finishes promptly.
    app.start_workers();
    let normal = app.start_job("normal").await;
    let record = app.wait_for_history(&normal, Duration::from_secs(30)).await;
    assert_eq!(record["status"], "finished");
    app.cleanup().await;
}

#[tokio::test]
async fn a_sweep_still_times_out_other_jobs_past_a_broken_one() {
    let app = spawn_app().await;
    // A stored job that does not decode, first in the collection.
    let broken = mongodb::bson::doc! {"_id": "broken-doc", "status": "running",
    "current_stage": {"tasks": [{"status": "pending", "deadline": "2000-01-01T00:00:00.000000Z"}]}};
    app.store
        .database()
        .collection("jobs")
        .insert_one(broken)
        .await
        .expect("insert");
    // A job whose worker queue cannot be declared (it exists as a classic queue), so every
    // re-publish of its dispatch fails, next...
    let channel = app.amqp.create_channel().await.expect("channel");
    channel
        .queue_declare(
            app.names.worker_queue("blocked").into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("declare a conflicting queue");
    let mut pipeline = silent_pipeline("blocked");
    pipeline["stages"][0]["timeout_s"] = json!(3600);
    app.register(&pipeline, "blocked-machine").await;
    let blocked = app.start_job_on("blocked-machine", "blocked").await;
    // ...and a healthy job whose worker never answers: only the sweep can end it.
    app.register(&silent_pipeline("silent"), "silent-machine")
        .await;
    let healthy = app.start_job_on("silent-machine", "healthy").await;

    let record = app
        .wait_for_history(&healthy, Duration::from_secs(20))
        .await;
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().expect("reason");
    assert!(
        error.contains("timed out") && error.contains("after 2 attempt(s)"),
        "{error}"
    );
    assert!(
        wait_metric(&app, "job_manager_sweep_errors_total", 1.0)
            .await
            .is_some()
    );
    assert!(
        metric(
            &app,
            "job_manager_documents_undecodable_total{collection=\"jobs\"}"
        )
        .await
            >= Some(1.0)
    );
    // Listings skip the document too, and still list the rest.
    let (status, active) = app.get("/jobs").await;
    assert_eq!(status, 200, "{active}");
    assert!(
        active.as_array().expect("ids").contains(&json!(blocked)),
        "{active}"
    );
    assert!(
        !active
            .as_array()
            .expect("ids")
            .contains(&json!("broken-doc"))
    );
    let _ = channel.close(200, "done".into()).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_replica_whose_clock_is_an_hour_ahead_times_out_nothing_early() {
    let app = spawn_app().await;
    let mut pipeline = silent_pipeline("slow");
    pipeline["stages"][0]["timeout_s"] = json!(1800);
    app.register(&pipeline, "slow-machine").await;
    let id = app.start_job_on("slow-machine", "clock").await;
    let before = app.wait_for_stage(&id, "01").await;
    // Another replica, whose own clock runs an hour ahead of everyone's.
    let replica = || {
        let ahead = Clock::with_local(std::sync::Arc::new(|| {
            chrono::Utc::now() + chrono::TimeDelta::hours(1)
        }));
        let broker = RabbitBroker::new(job_manager::amqp::Link::new(), app.names.clone());
        Coordinator::new(
            std::sync::Arc::new(app.store.clone()),
            std::sync::Arc::new(broker),
        )
        .with_clock(ahead)
    };
    // Set by the database's clock, as every sweep does, it sees the task is not due.
    let synced = replica();
    synced.sync_clock().await.expect("sync");
    let offset = synced.now().as_datetime() - chrono::Utc::now();
    assert!(offset.num_seconds().abs() < 5, "offset {offset}");
    let swept = sweep_once(
        &synced,
        &app.store,
        synced.now(),
        Duration::from_secs(30),
        &mut Resume::default(),
    )
    .await
    .expect("sweep");
    assert_eq!((swept.actions, swept.failed), (0, 0));
    let (_, after) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(after["current_stage"], before["current_stage"]);
    // Judged by its own clock, the task would be half an hour overdue.
    let own = replica();
    let swept = sweep_once(
        &own,
        &app.store,
        own.now(),
        Duration::from_secs(30),
        &mut Resume::default(),
    )
    .await
    .expect("sweep");
    assert_eq!(
        swept.actions + swept.failed,
        1,
        "the clock that is off acts on the task"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn keys_with_dots_are_stored_as_sent() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let id = app.start_job_on(demo::MACHINE_ID, "dots").await;
    let job = app.wait_for_stage(&id, "01").await;
    let task = job["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("task");
    let outputs = json!({"csv_file": "c", "a.b": 1, "nested": {"d.e": [1, {"f.g": "h"}]}});
    let (status, body) = app
        .post_json(&format!("/jobs/{id}"), &json!({ task: outputs.clone() }))
        .await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (202, json!("recorded")),
        "{body}"
    );
    let (_, job) = app.get(&format!("/jobs/{id}")).await;
    let stage = job["stages"]
        .as_array()
        .expect("stages")
        .last()
        .expect("01")
        .clone();
    assert_eq!(stage["outputs"], json!([outputs]));
    app.cleanup().await;
}
