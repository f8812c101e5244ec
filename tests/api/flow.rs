//! The seed's job flow end to end.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{metric, spawn_app, stage_outputs};

/// The seed's `GET /history/{job}` example, verbatim.
fn seed() -> Value {
    serde_json::from_str(include_str!("../fixtures/seed-history.json")).expect("fixture is JSON")
}

/// What the seed's workers returned for a task of `stage`: stage 03's one task returned the list.
fn seed_outputs(stage: &str) -> Value {
    let outputs = seed()["stages"]
        .as_array()
        .and_then(|stages| stages.iter().find(|s| s["id"] == stage))
        .and_then(|s| s["outputs"].as_array().cloned())
        .expect("stage in the seed");
    match stage {
        "03" => Value::Array(outputs),
        _ => outputs[0].clone(),
    }
}

fn assert_seed_keys(record: &Value) {
    assert!(record["machine_id"].is_string());
    assert!(record["status"].is_string());
    assert!(record["pipeline_id"].is_string());
    let created = record["created"].as_str().expect("created is a string");
    assert!(created.ends_with('Z') && created.len() == 27, "{created}");
    for stage in record["stages"].as_array().expect("stages") {
        assert!(stage["id"].is_string());
        assert!(stage["outputs"].is_array());
    }
}

#[tokio::test]
async fn seed_shaped_job_runs_end_to_end_with_amqp_workers() {
    let mut app = spawn_app().await;
    app.register_seed_pipeline().await;
    app.start_workers();
    let id = app.start_job("amqp-flow").await;
    assert_eq!(id.len(), 22);

    let record = app.wait_for_history(&id, Duration::from_secs(60)).await;
    assert_eq!(record["status"], "finished", "{record}");
    assert_seed_keys(&record);
    let stages = stage_outputs(&record);
    let ids: Vec<&str> = stages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["init", "01", "02", "03", "04"]);
    assert_eq!(stages[3].1.len(), 14);
    let sensors: Vec<&str> = stages[3]
        .1
        .iter()
        .map(|o| o["unique_id"].as_str().expect("sensor"))
        .collect();
    assert_eq!(sensors.first(), Some(&"ec-generator"));
    assert_eq!(sensors.last(), Some(&"wm2-vakuumpumpe"));
    for output in &stages[3].1 {
        let table = output["result_table"].as_str().expect("table id");
        let text = app.files.read(table).expect("table file exists");
        assert_eq!(text.lines().count(), 9, "header and 8 readings");
    }
    assert_eq!(stages[4].1, vec![Value::Null; 14]);
    let log = record["stages"][4]["log"].as_str().expect("sink log");
    assert_eq!(log.lines().count(), 14);
    assert!(log.contains("ec-generator: 8 readings"), "{log}");

    let (status, active) = app.get("/jobs").await;
    assert_eq!(status, 200);
    assert!(!active.as_array().expect("list").contains(&json!(id)));

    // The run shows in the metrics (the recorder is shared by the tests of this process, so
    // the figures are at least this run's).
    for (series, at_least) in [
        ("job_manager_jobs_started_total", 1.0),
        ("job_manager_jobs_ended_total{status=\"finished\"}", 1.0),
        ("job_manager_tasks_dispatched_total{worker=\"sink\"}", 14.0),
        ("job_manager_tasks_completed_total{worker=\"sink\"}", 14.0),
        (
            "job_manager_stage_duration_seconds_count{worker=\"split-by-sensor\"}",
            1.0,
        ),
        // One sample per stage that dispatched the next: 01, 02 and 03.
        ("job_manager_result_to_dispatch_seconds_count", 3.0),
        // Where the time went: at least a write per stage (results are coalesced), a publish
        // per stage (4) and one archive. (Marks may all be skipped: below.)
        ("job_manager_step_seconds_count{step=\"write\"}", 5.0),
        ("job_manager_step_seconds_count{step=\"publish\"}", 4.0),
        ("job_manager_step_seconds_count{step=\"archive\"}", 1.0),
    ] {
        let value = metric(&app, series).await;
        assert!(value.is_some_and(|v| v >= at_least), "{series} = {value:?}");
    }
    // A mark is written, or skipped because the result came within the mark delay.
    let marked = metric(&app, "job_manager_step_seconds_count{step=\"mark\"}").await;
    let skipped = metric(&app, "job_manager_marks_skipped_total").await;
    assert!(
        marked.unwrap_or(0.0) + skipped.unwrap_or(0.0) >= 1.0,
        "marks: {marked:?} written, {skipped:?} skipped"
    );
    assert!(metric(&app, "job_manager_jobs_active").await.is_some());
    let (_, history) = app.get("/history").await;
    assert!(history.as_array().expect("list").contains(&json!(id)));
    assert_eq!(app.get(&format!("/jobs/{id}")).await.0, 404);
    app.cleanup().await;
}

#[tokio::test]
async fn seed_shaped_job_runs_with_results_posted_over_http() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let events = app.listen_events("#").await;
    let id = app.start_job("http-flow").await;

    // The first dispatch crosses RabbitMQ as the contract describes.
    let message = app
        .take(
            &app.names.worker_queue("import-csv"),
            Duration::from_secs(10),
        )
        .await
        .expect("stage 01 dispatched");
    let properties = &message.delivery.properties;
    let dispatch: Value = serde_json::from_slice(&message.delivery.data).expect("json");
    let task_id = dispatch["task_id"].as_str().expect("task id").to_owned();
    assert_eq!(dispatch["job_id"], id.as_str());
    assert_eq!(dispatch["stage_id"], "01");
    assert_eq!(dispatch["attempt"], 1);
    assert_eq!(
        dispatch["worker"],
        json!({"id": "import-csv", "name": "Import CSV"})
    );
    assert_eq!(dispatch["configs"]["delimiter"], ",");
    assert_eq!(
        properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some(task_id.as_str())
    );
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some(task_id.as_str())
    );
    assert_eq!(
        properties.reply_to().as_ref().map(|s| s.as_str()),
        Some(app.names.results_queue_of(&id).as_str())
    );
    assert!(
        app.names
            .result_partitions()
            .contains(&app.names.results_queue_of(&id)),
        "reply_to names one of the result partitions"
    );
    assert_eq!(
        properties.kind().as_ref().map(|s| s.as_str()),
        Some("stage-dispatch")
    );
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));

    let mut first_task = None;
    for stage in ["01", "02", "03", "04"] {
        let record = app.wait_for_stage(&id, stage).await;
        let tasks = record["current_stage"]["tasks"]
            .as_array()
            .expect("tasks")
            .clone();
        assert_eq!(tasks.len(), if stage == "04" { 14 } else { 1 });
        if stage == "04" {
            assert_eq!(
                tasks[0]["inputs"],
                json!({"sensor": "ec-generator", "table": "ed97da5995d240de980f50437499454b"})
            );
        }
        for task in tasks {
            let task_id = task["task_id"].as_str().expect("task id").to_owned();
            first_task.get_or_insert(task_id.clone());
            let (status, body) = app
                .post_json(
                    &format!("/jobs/{id}"),
                    &json!({ task_id: seed_outputs(stage) }),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(body["outcome"], "recorded");
        }
    }
    let record = app.wait_for_history(&id, Duration::from_secs(10)).await;
    assert_eq!(record["status"], "finished");
    assert_seed_keys(&record);
    let stages = stage_outputs(&record);
    assert_eq!(
        stages[0].1,
        vec![json!({"init_source": record["file_name"]})]
    );
    assert_eq!(stages[1].1, vec![seed_outputs("01")]);
    assert_eq!(stages[2].1, vec![seed_outputs("02")]);
    assert_eq!(Value::Array(stages[3].1.clone()), seed_outputs("03"));
    assert_eq!(stages[4].1, vec![Value::Null; 14]);

    // Events: running, each stage completed, finished, then the cleanup of 01 to 03; all for
    // this job.
    let mut keys = Vec::new();
    while let Some(event) = app.take(&events, Duration::from_millis(500)).await {
        let body: Value = serde_json::from_slice(&event.delivery.data).expect("json");
        assert_eq!(body["job_id"], id.as_str());
        keys.push(format!(
            "{} {}",
            event.delivery.routing_key,
            body["stage_id"].as_str().unwrap_or("-")
        ));
    }
    assert_eq!(
        keys,
        [
            "job.running -",
            "stage.completed 01",
            "stage.completed 02",
            "stage.completed 03",
            "stage.completed 04",
            "job.finished -",
            "job.cleanup -"
        ]
    );

    // A duplicate of an already recorded result is accepted and changes nothing.
    let task_id = first_task.expect("a task");
    let (status, body) = app
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ task_id: {"csv_file": "something else"} }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_ne!(body["outcome"], "recorded");
    let (_, again) = app.get(&format!("/history/{id}")).await;
    assert_eq!(again, record);
    app.cleanup().await;
}

#[tokio::test]
async fn a_finished_file_may_run_again_and_the_earlier_run_stays_reachable() {
    let mut app = spawn_app().await;
    app.register_seed_pipeline().await;
    app.start_workers();
    let id = app.start_job("rerun").await;
    let first = app.wait_for_history(&id, Duration::from_secs(60)).await;
    let again = app.start_job("rerun").await;
    assert_eq!(again, id, "same machine and hash give the same job id");
    let started = std::time::Instant::now();
    let second = loop {
        let (_, record) = app.get(&format!("/history/{id}")).await;
        if record["created"] != first["created"] {
            break record;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "second run never archived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(second["status"], "finished");
    let previous = second["previous_runs"]
        .as_array()
        .expect("previous runs kept");
    assert_eq!(previous.len(), 1);
    assert_eq!(previous[0]["created"], first["created"]);
    assert_eq!(previous[0]["status"], "finished");
    app.cleanup().await;
}
