//! Aborting a running job.

use std::time::Duration;

use job_manager::amqp::publisher::{Outgoing, Publisher};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn abort_moves_job_to_history_and_a_late_result_changes_nothing() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    // Listen for job.aborted as a worker would.
    let events = app.listen_events("job.aborted").await;

    let id = app.start_job("abort").await;
    let running = app.wait_for_stage(&id, "01").await;
    assert_eq!(running["status"], "running");
    let task_id = running["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("task")
        .to_owned();
    let (active_status, active) = app.get("/jobs").await;
    assert_eq!(active_status, 200);
    assert!(active.as_array().expect("list").contains(&json!(id)));

    let (status, body) = app
        .post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "aborted");

    let record = app.wait_for_history(&id, Duration::from_secs(10)).await;
    assert_eq!(record["status"], "aborted");
    assert!(record["completed"].is_string());
    let stages: Vec<&str> = record["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(stages, ["init", "01"]);
    assert_eq!(app.get(&format!("/jobs/{id}")).await.0, 404);
    let (_, active) = app.get("/jobs").await;
    assert!(!active.as_array().expect("list").contains(&json!(id)));

    let event = app
        .take(&events, Duration::from_secs(5))
        .await
        .expect("job.aborted published");
    let event: Value = serde_json::from_slice(&event.delivery.data).expect("json");
    assert_eq!(event["job_id"], id.as_str());
    assert_eq!(event["status"], "aborted");
    assert!(event["stage_id"].is_null());

    // A late result over HTTP is accepted and ignored.
    let (status, body) = app
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ task_id.clone(): {"csv_file": "late"} }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["outcome"], "ignored");
    // A late result over AMQP is acked and ignored, not dead-lettered.
    let publisher = Publisher::open(&app.amqp).await.expect("publisher");
    let late =
        json!({"task_id": task_id, "job_id": id, "outputs": {"csv_file": "late"}, "error": null});
    publisher
        .publish(
            Outgoing::json("", app.names.results_queue(), "stage-result", &late).expect("encode"),
        )
        .await
        .expect("publish");
    app.wait_until_consumed(&app.names.results_queue()).await;
    assert!(
        app.take(&app.names.dead_queue(), Duration::from_millis(200))
            .await
            .is_none()
    );
    let (_, after) = app.get(&format!("/history/{id}")).await;
    assert_eq!(after, record);

    // Aborting again is a conflict: the job already ended.
    let (status, body) = app
        .post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    app.cleanup().await;
}
