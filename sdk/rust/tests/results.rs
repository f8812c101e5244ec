//! What a worker sends back, against the real RabbitMQ: results, errors, panics, unsendable
//! outputs, and deliveries that are not dispatches.

mod common;

use std::time::Duration;

use common::{Running, Scratch, amqp_url, consuming, wait_notice};
use job_manager_worker::{Notice, Task, Worker};
use serde::Serialize;
use serde_json::{Value, json};

const STOP_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_dispatch_gets_a_confirmed_result_that_echoes_its_ids_and_carries_the_log() {
    let scratch = Scratch::new(&["echo"]).await;
    let (worker, mut notices) = scratch.worker(Worker::new("echo", |task: Task| async move {
        let text = task.input_str("text")?;
        task.log(format!("delimiter {}", task.config_text("delimiter", ",")));
        task.log("done");
        Ok::<_, String>(
            json!([{"upper": text.to_uppercase(), "stage": task.dispatch().stage_id}, null]),
        )
    }));
    let queue = worker.queue();
    let running = Running::serve(worker, amqp_url());
    consuming(&mut notices).await;
    let dispatch = scratch.dispatch("echo", json!({"text": "hello"}));
    let body = serde_json::to_vec(&dispatch).expect("json");
    scratch.publish_dispatch("echo", &body, true).await;

    let (result, properties) = scratch.result().await;
    assert_eq!(result["task_id"], dispatch["task_id"]);
    assert_eq!(result["job_id"], dispatch["job_id"]);
    assert_eq!(result["run_id"], dispatch["run_id"]);
    assert_eq!(
        result["outputs"],
        json!([{"upper": "HELLO", "stage": "01"}, null])
    );
    assert_eq!(result["log"], "delimiter ;\ndone");
    assert_eq!(result["error"], Value::Null);
    assert_eq!(
        properties.correlation_id().as_ref().map(|c| c.as_str()),
        dispatch["task_id"].as_str()
    );
    assert_eq!(
        properties.kind().as_ref().map(|k| k.as_str()),
        Some("stage-result")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    running.stop(STOP_LIMIT).await;
    // Acked, not handed back: nothing is left in the worker's queue once it stopped.
    assert_eq!(scratch.ready(&queue).await, 0);
}

#[tokio::test]
async fn a_dispatch_without_reply_to_is_answered_on_the_results_queue() {
    let scratch = Scratch::new(&["plain"]).await;
    let results = format!("{}.results", scratch.prefix);
    scratch.declare(&results).await;
    let (worker, mut notices) = scratch.worker(Worker::new("plain", |_task: Task| async {
        Ok::<_, String>(json!({"ok": true}))
    }));
    let running = Running::serve(worker, amqp_url());
    consuming(&mut notices).await;
    let dispatch = scratch.dispatch("plain", json!({}));
    let body = serde_json::to_vec(&dispatch).expect("json");
    scratch.publish_dispatch("plain", &body, false).await;
    let message = scratch
        .take(&results, Duration::from_secs(10))
        .await
        .expect("a result on P.results");
    let result: Value = serde_json::from_slice(&message.delivery.data).expect("json");
    assert_eq!(result["task_id"], dispatch["task_id"]);
    assert_eq!(result["outputs"], json!({"ok": true}));
    running.stop(STOP_LIMIT).await;
}

#[tokio::test]
async fn errors_and_panics_become_error_results_and_the_worker_serves_on() {
    let scratch = Scratch::new(&["moody"]).await;
    let (worker, mut notices) = scratch.worker(Worker::new("moody", |task: Task| async move {
        match task.input_str("mode")? {
            "error" => {
                task.log("about to fail");
                Err(format!("cannot parse {}", task.task_id()))
            }
            "panic" => panic!("the handler broke"),
            _ => Ok(json!({"fine": 1})),
        }
    }));
    let running = Running::serve(worker, amqp_url());
    consuming(&mut notices).await;
    for mode in ["error", "panic", "ok"] {
        let dispatch = scratch.dispatch("moody", json!({"mode": mode}));
        let body = serde_json::to_vec(&dispatch).expect("json");
        scratch.publish_dispatch("moody", &body, true).await;
        let (result, _) = scratch.result().await;
        assert_eq!(result["task_id"], dispatch["task_id"], "{mode}");
        match mode {
            "error" => {
                let task_id = dispatch["task_id"].as_str().expect("id");
                assert_eq!(result["error"], format!("cannot parse {task_id}"));
                assert_eq!(result["outputs"], Value::Null);
                assert_eq!(result["log"], "about to fail");
            }
            "panic" => {
                assert_eq!(result["error"], "handler panicked: the handler broke");
                assert_eq!(result["outputs"], Value::Null);
            }
            _ => {
                assert_eq!(result["error"], Value::Null);
                assert_eq!(result["outputs"], json!({"fine": 1}));
            }
        }
    }
    running.stop(STOP_LIMIT).await;
}

/// Outputs as JSON, or outputs whose `Serialize` fails.
enum Reply {
    Json(Value),
    Unserialisable,
}

impl Serialize for Reply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Reply::Json(value) => value.serialize(serializer),
            Reply::Unserialisable => Err(serde::ser::Error::custom("this value has no JSON form")),
        }
    }
}

#[tokio::test]
async fn outputs_that_cannot_be_sent_become_error_results_that_say_why() {
    let scratch = Scratch::new(&["unsendable"]).await;
    let (worker, mut notices) =
        scratch.worker(Worker::new("unsendable", |task: Task| async move {
            Ok::<_, String>(match task.input_str("kind")? {
                "serialise" => Reply::Unserialisable,
                "u64" => Reply::Json(json!({"count": u64::MAX})),
                "shape" => Reply::Json(json!([{"a": 1}, 5])),
                _ => Reply::Json(json!({"fine": true})),
            })
        }));
    let running = Running::serve(worker, amqp_url());
    consuming(&mut notices).await;
    let cases = [
        (
            "serialise",
            "outputs cannot be sent as JSON: this value has no JSON form",
        ),
        (
            "u64",
            "outputs cannot be sent as JSON: integer 18446744073709551615 is outside the signed 64-bit range (at $.count)",
        ),
        (
            "shape",
            "outputs must be an object, a list of objects and nulls, or null, not a number (at $[1])",
        ),
    ];
    for (kind, reason) in cases {
        let dispatch = scratch.dispatch("unsendable", json!({"kind": kind}));
        let body = serde_json::to_vec(&dispatch).expect("json");
        scratch.publish_dispatch("unsendable", &body, true).await;
        let (result, _) = scratch.result().await;
        assert_eq!(result["error"], reason, "{kind}");
        assert_eq!(result["outputs"], Value::Null, "{kind}");
        let noticed = wait_notice(&mut notices, |n| {
            matches!(n, Notice::UnsendableOutputs { .. })
        })
        .await;
        assert_eq!(
            noticed,
            Notice::UnsendableOutputs {
                task_id: dispatch["task_id"].as_str().expect("id").to_owned(),
                reason: reason.to_owned()
            }
        );
    }
    let dispatch = scratch.dispatch("unsendable", json!({"kind": "fine"}));
    scratch
        .publish_dispatch(
            "unsendable",
            &serde_json::to_vec(&dispatch).expect("json"),
            true,
        )
        .await;
    assert_eq!(scratch.result().await.0["outputs"], json!({"fine": true}));
    running.stop(STOP_LIMIT).await;
}

#[tokio::test]
async fn a_delivery_that_is_not_a_dispatch_is_rejected_and_the_worker_serves_on() {
    let scratch = Scratch::new(&["strict"]).await;
    let (worker, mut notices) = scratch.worker(Worker::new("strict", |_task: Task| async {
        Ok::<_, String>(Value::Null)
    }));
    let queue = worker.queue();
    let running = Running::serve(worker, amqp_url());
    consuming(&mut notices).await;
    scratch
        .publish_dispatch("strict", b"{\"task_id\": 7}", true)
        .await;
    let noticed = wait_notice(&mut notices, |n| {
        matches!(n, Notice::MalformedDispatch { .. })
    })
    .await;
    assert!(
        noticed.to_string().contains("malformed dispatch"),
        "{noticed}"
    );
    let dispatch = scratch.dispatch("strict", json!({}));
    let body = serde_json::to_vec(&dispatch).expect("json");
    scratch.publish_dispatch("strict", &body, true).await;
    assert_eq!(scratch.result().await.0["task_id"], dispatch["task_id"]);
    running.stop(STOP_LIMIT).await;
    // Rejected without requeue: it is not waiting in the queue either.
    assert_eq!(scratch.ready(&queue).await, 0);
}
