//! Malformed and stray messages on the results queue.

use std::time::Duration;

use job_manager::amqp::publisher::{Outgoing, Publisher};
use lapin::BasicProperties;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn raw(queue: String, body: Vec<u8>) -> Outgoing {
    Outgoing {
        exchange: String::new(),
        routing_key: queue,
        body,
        properties: BasicProperties::default().with_delivery_mode(2),
    }
}

#[tokio::test]
async fn malformed_results_are_dead_lettered_and_stray_ones_ignored() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let publisher = Publisher::open(&app.amqp).await.expect("publisher");
    let results = app.names.results_queue();
    let malformed: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        serde_json::to_vec(&json!({"task_id": 7, "job_id": [], "outputs": null})).expect("json"),
        serde_json::to_vec(&json!({"task_id": "B57CAAAC", "job_id": "x", "outputs": {}}))
            .expect("json"),
        vec![b'['; 5 * 1024 * 1024],
    ];
    for body in &malformed {
        publisher
            .publish(raw(results.clone(), body.clone()))
            .await
            .expect("publish");
    }
    let mut dead = Vec::new();
    for _ in 0..malformed.len() {
        let message = app
            .take(&app.names.dead_queue(), Duration::from_secs(10))
            .await
            .expect("dead-lettered");
        dead.push(message.delivery.data);
    }
    for body in &malformed {
        assert!(
            dead.contains(body),
            "a malformed message did not reach the dead-letter queue"
        );
    }
    let dead_lettered = crate::helpers::wait_metric(
        &app,
        "job_manager_messages_dead_lettered_total",
        malformed.len() as f64,
    )
    .await;
    assert!(
        dead_lettered.is_some_and(|v| v >= malformed.len() as f64),
        "{dead_lettered:?}"
    );

    // A well-formed result for an unknown job or task is acknowledged and ignored.
    let stray = json!({"task_id": "b57caaac4e5b4444a4169ce784a35201", "job_id": "AAAAAAAAAAAAAAAAAAAAAA", "outputs": null, "error": null});
    publisher
        .publish(Outgoing::json("", results.clone(), "stage-result", &stray).expect("encode"))
        .await
        .expect("publish");
    app.wait_until_consumed(&results).await;
    assert!(
        app.take(&app.names.dead_queue(), Duration::from_millis(300))
            .await
            .is_none()
    );

    // The service keeps running and still runs jobs.
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let id = app.start_job("after-garbage").await;
    let record = app.wait_for_stage(&id, "01").await;
    assert_eq!(record["status"], Value::from("running"));
    app.cleanup().await;
}

#[tokio::test]
async fn a_refused_publish_is_retried_then_reported_not_dropped() {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let app = spawn_app().await;
    // A queue that refuses every message: the broker nacks each publish to it.
    let queue = format!("{}.refuses", app.names.prefix());
    let channel = app.amqp.create_channel().await.expect("channel");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        )
        .await
        .expect("declare");
    let publisher = Publisher::open(&app.amqp).await.expect("publisher");
    let started = std::time::Instant::now();
    let outcome = publisher.publish(raw(queue.clone(), b"{}".to_vec())).await;
    assert!(
        matches!(
            outcome,
            Err(job_manager::amqp::publisher::PublishError::Nacked)
        ),
        "{outcome:?}"
    );
    // Refused messages are published again after pauses of 20, 100 and 500 ms before giving up.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    app.cleanup().await;
}

#[tokio::test]
async fn an_ended_job_names_its_intermediate_outputs_for_cleanup() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let cleanups = app.listen_events("job.cleanup").await;
    let id = app.start_job("cleanup").await;
    app.answer_stage(&id, "01", json!({"csv_file": "c.csv"}))
        .await;
    app.answer_stage(&id, "02", json!({"output_csv": "o.csv"}))
        .await;
    let tables = json!([{"unique_id": "a", "result_table": "ta.csv"}, {"unique_id": "b", "result_table": "tb.csv"}]);
    app.answer_stage(&id, "03", tables).await;
    app.answer_stage(&id, "04", json!({"summary": "final.csv"}))
        .await;
    app.wait_for_history(&id, Duration::from_secs(10)).await;
    let message = app
        .take(&cleanups, Duration::from_secs(5))
        .await
        .expect("job.cleanup published");
    assert_eq!(
        message
            .delivery
            .properties
            .kind()
            .as_ref()
            .map(|k| k.as_str()),
        Some("job-cleanup")
    );
    let event: Value = serde_json::from_slice(&message.delivery.data).expect("json");
    crate::helpers::assert_schema("job-cleanup", &event);
    assert_eq!(
        (event["job_id"].clone(), event["status"].clone()),
        (json!(id), json!("finished"))
    );
    assert_eq!(
        (event["part"].clone(), event["parts"].clone()),
        (json!(1), json!(1))
    );
    let named: Vec<(Value, Value)> = event["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| (s["stage_id"].clone(), s["outputs"].clone()))
        .collect();
    assert_eq!(
        named,
        [
            (json!("01"), json!([{"csv_file": "c.csv"}])),
            (json!("02"), json!([{"output_csv": "o.csv"}])),
            (
                json!("03"),
                json!([{"unique_id": "a", "result_table": "ta.csv"}, {"unique_id": "b", "result_table": "tb.csv"}])
            ),
        ],
        "not the last stage's final outputs"
    );
    app.cleanup().await;
}
