//! A worker's life against the real RabbitMQ: aborts, a dropped connection, shutdown, and a
//! session on a connection the program owns.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::proxy::{Proxy, through};
use common::{Running, Scratch, amqp_url, consuming, wait_notice};
use job_manager_worker::{Notice, Task, Worker};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Sends on `dropped` when the handler's future is dropped.
struct DropSignal(mpsc::UnboundedSender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

#[tokio::test]
async fn an_abort_stops_the_running_handler_and_skips_later_dispatches_of_that_run() {
    let scratch = Scratch::new(&["slow"]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (started, mut starts) = mpsc::unbounded_channel::<String>();
    let (dropped, mut drops) = mpsc::unbounded_channel();
    let handler = {
        let calls = calls.clone();
        move |task: Task| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (started, dropped) = (started.clone(), dropped.clone());
            async move {
                let _signal = DropSignal(dropped);
                let _ = started.send(task.task_id().to_owned());
                if task.input_str("mode")? == "quick" {
                    return Ok(json!({"quick": true}));
                }
                task.cancelled().await;
                Ok::<_, String>(json!({"never": "sent"}))
            }
        }
    };
    let (worker, mut notices) = scratch.worker(Worker::new("slow", handler).prefetch(4));
    let queue = worker.queue();
    let running = Running::serve(worker, amqp_url());
    consuming(&mut notices).await;

    let dispatch = scratch.dispatch("slow", json!({"mode": "wait"}));
    let (job_id, run_id) = (dispatch["job_id"].clone(), dispatch["run_id"].clone());
    let body = serde_json::to_vec(&dispatch).expect("json");
    scratch.publish_dispatch("slow", &body, true).await;
    let task_id = tokio::time::timeout(Duration::from_secs(10), starts.recv())
        .await
        .expect("the handler started")
        .expect("a task id");
    let (job, run) = (job_id.as_str().expect("job"), run_id.as_str().expect("run"));
    scratch.abort(job, run).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), drops.recv()).await;
    assert_eq!(
        stopped.ok().flatten(),
        Some("dropped"),
        "the handler was not stopped"
    );
    let noticed = wait_notice(&mut notices, |n| matches!(n, Notice::Cancelled { .. })).await;
    assert_eq!(
        noticed,
        Notice::Cancelled {
            task_id,
            job_id: job.to_owned()
        }
    );

    // A later dispatch of the aborted run is skipped; one of another run of the job is not.
    let mut again = scratch.dispatch("slow", json!({"mode": "quick"}));
    again["job_id"] = job_id.clone();
    again["run_id"] = run_id.clone();
    let body = serde_json::to_vec(&again).expect("json");
    scratch.publish_dispatch("slow", &body, true).await;
    wait_notice(&mut notices, |n| matches!(n, Notice::SkippedAborted { .. })).await;
    let mut rerun = scratch.dispatch("slow", json!({"mode": "quick"}));
    rerun["job_id"] = job_id;
    let body = serde_json::to_vec(&rerun).expect("json");
    scratch.publish_dispatch("slow", &body, true).await;
    let (result, _) = scratch.result().await;
    assert_eq!(
        result["task_id"], rerun["task_id"],
        "only the rerun's result is sent"
    );
    assert_eq!(result["outputs"], json!({"quick": true}));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    running.stop(STOP_LIMIT).await;
    assert_eq!(scratch.ready(&queue).await, 0, "every dispatch was acked");
    assert!(
        scratch
            .take(&scratch.replies(), Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn the_worker_reconnects_after_its_connection_drops() {
    let scratch = Scratch::new(&["steady"]).await;
    let (_, upstream) = through(&amqp_url(), 0);
    let proxy = Proxy::start(upstream).await;
    let (url, _) = through(&amqp_url(), proxy.port);
    let (worker, mut notices) = scratch.worker(Worker::new("steady", |task: Task| async move {
        Ok::<_, String>(json!({"echo": task.input_str("n")?}))
    }));
    let running = Running::serve(worker, url);
    consuming(&mut notices).await;
    for n in ["before", "after"] {
        let dispatch = scratch.dispatch("steady", json!({"n": n}));
        let body = serde_json::to_vec(&dispatch).expect("json");
        scratch.publish_dispatch("steady", &body, true).await;
        let result = scratch.result_for(&dispatch).await;
        assert_eq!(result["outputs"], json!({"echo": n}));
        if n == "before" {
            assert!(
                proxy.cut() >= 1,
                "the worker's connection went through the proxy"
            );
            let lost =
                wait_notice(&mut notices, |n| matches!(n, Notice::Disconnected { .. })).await;
            let Notice::Disconnected { retry_in, .. } = lost else {
                unreachable!()
            };
            assert_eq!(retry_in, Duration::from_millis(200), "the first pause");
            consuming(&mut notices).await;
        }
    }
    running.stop(STOP_LIMIT).await;
}

#[tokio::test]
async fn at_shutdown_a_task_still_running_after_the_grace_goes_back_to_the_queue() {
    let scratch = Scratch::new(&["stubborn"]).await;
    let (started, mut starts) = mpsc::unbounded_channel::<()>();
    let (worker, mut notices) = scratch.worker(
        Worker::new("stubborn", move |_task: Task| {
            let started = started.clone();
            async move {
                let _ = started.send(());
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, String>(Value::Null)
            }
        })
        .shutdown_grace(Duration::from_millis(300)),
    );
    let queue = worker.queue();
    let running = Running::serve(worker, amqp_url());
    consuming(&mut notices).await;
    let dispatch = scratch.dispatch("stubborn", json!({}));
    let body = serde_json::to_vec(&dispatch).expect("json");
    scratch.publish_dispatch("stubborn", &body, true).await;
    tokio::time::timeout(Duration::from_secs(10), starts.recv())
        .await
        .expect("the handler started");
    running.stop(Duration::from_secs(10)).await;
    let noticed = wait_notice(&mut notices, |n| matches!(n, Notice::HandedBack { .. })).await;
    assert_eq!(
        noticed,
        Notice::HandedBack {
            task_id: dispatch["task_id"].as_str().expect("id").to_owned()
        }
    );
    let back = scratch
        .take(&queue, Duration::from_secs(10))
        .await
        .expect("the dispatch is back in the queue");
    let body: Value = serde_json::from_slice(&back.delivery.data).expect("json");
    assert_eq!(body["task_id"], dispatch["task_id"]);
    assert!(
        scratch
            .take(&scratch.replies(), Duration::from_millis(300))
            .await
            .is_none(),
        "no result was sent"
    );
}

#[tokio::test]
async fn a_session_on_the_programs_connection_ends_at_shutdown_and_leaves_it_open() {
    let scratch = Scratch::new(&["guest"]).await;
    let connection = job_manager_worker::connect(&amqp_url(), "sdk test")
        .await
        .expect("connect");
    let (worker, mut notices) = scratch.worker(Worker::new("guest", |_task: Task| async {
        Ok::<_, String>(json!({"shared": true}))
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let session = async {
        worker
            .run(&connection, async move {
                let _ = stopped.await;
            })
            .await
    };
    let driving = async {
        consuming(&mut notices).await;
        let dispatch = scratch.dispatch("guest", json!({}));
        let body = serde_json::to_vec(&dispatch).expect("json");
        scratch.publish_dispatch("guest", &body, true).await;
        let (result, _) = scratch.result().await;
        assert_eq!(result["outputs"], json!({"shared": true}));
        drop(stop);
    };
    let (ended, ()) = tokio::time::timeout(STOP_LIMIT, async { tokio::join!(session, driving) })
        .await
        .expect("the session ended in time");
    ended.expect("the session ended without an error");
    assert!(
        connection.status().connected(),
        "the connection is left open"
    );
    let _ = connection.close(200, "done".into()).await;
}
