//! What the tests against the real RabbitMQ share: a prefix of each test's own whose queues and
//! exchanges are deleted when the test ends, pass or fail; a worker running in the background;
//! and a TCP proxy that can drop every connection through it.

#![allow(dead_code)] // each test binary uses part of it

pub mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use job_manager_worker::{Notice, Worker};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub fn amqp_url() -> String {
    job_manager_worker::amqp_url_from_env()
}

/// A fresh name part: the time, the process and a counter.
pub fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A 32-hex id.
pub fn hex_id() -> String {
    format!("{:0>32}", unique())
}

/// A test's own prefix on the real broker. Dropping it deletes the queues and exchanges the
/// test and its workers declared under it, also when the test panics.
pub struct Scratch {
    pub prefix: String,
    pub connection: Connection,
    pub channel: Channel,
    worker_ids: Vec<String>,
}

impl Scratch {
    /// A prefix for workers `worker_ids`, with a reply queue `P.replies` declared.
    pub async fn new(worker_ids: &[&str]) -> Self {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("the tests need RabbitMQ (scripts/services.sh)");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let scratch = Self {
            prefix: format!("jm-sdk-test-{}", unique()),
            connection,
            channel,
            worker_ids: worker_ids.iter().map(|w| (*w).to_owned()).collect(),
        };
        scratch.declare(&scratch.replies()).await;
        scratch
    }

    /// `P.replies`: where the test's dispatches ask for results.
    pub fn replies(&self) -> String {
        format!("{}.replies", self.prefix)
    }

    /// Declares a plain queue `name` (deleted on drop when under the prefix).
    pub async fn declare(&self, name: &str) {
        self.channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
    }

    /// A worker with this prefix, whose notices go to the returned receiver.
    pub fn worker(&self, worker: Worker) -> (Worker, mpsc::UnboundedReceiver<Notice>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let worker = worker.prefix(&self.prefix).on_notice(move |notice| {
            let _ = sender.send(notice.clone());
        });
        (worker, receiver)
    }

    /// A stage-dispatch for `worker_id` with fresh ids.
    pub fn dispatch(&self, worker_id: &str, inputs: Value) -> Value {
        json!({
            "task_id": hex_id(), "job_id": format!("{:A>22}", unique()), "run_id": hex_id(),
            "machine_id": "m", "pipeline_id": "p", "stage_id": "01",
            "worker": {"id": worker_id, "name": worker_id},
            "inputs": inputs, "configs": {"delimiter": ";"}, "attempt": 1,
            "deadline": "2030-01-01T00:00:00Z"
        })
    }

    /// Publishes `body` to `P.dispatch` with key `worker_id`, replying to `P.replies` unless
    /// `reply_to` is `None`; waits for the broker's confirm.
    pub async fn publish_dispatch(&self, worker_id: &str, body: &[u8], reply: bool) {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if reply {
            properties = properties.with_reply_to(self.replies().into());
        }
        let exchange = format!("{}.dispatch", self.prefix);
        self.publish(&exchange, worker_id, body, properties).await;
    }

    /// Publishes the `job.aborted` event of a run on `P.events`.
    pub async fn abort(&self, job_id: &str, run_id: &str) {
        let event = json!({"job_id": job_id, "run_id": run_id, "status": "aborted",
                           "stage_id": null, "at": "2030-01-01T00:00:00Z"});
        let body = serde_json::to_vec(&event).expect("json");
        let exchange = format!("{}.events", self.prefix);
        self.publish(&exchange, "job.aborted", &body, BasicProperties::default())
            .await;
    }

    async fn publish(&self, exchange: &str, key: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "the broker refused the message");
    }

    /// Takes one message from `queue`, waiting up to `limit`.
    pub async fn take(
        &self,
        queue: &str,
        limit: Duration,
    ) -> Option<lapin::message::BasicGetMessage> {
        let started = Instant::now();
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if got.is_some() || started.elapsed() > limit {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The next result on `P.replies` as JSON (panics after 10 s without one).
    pub async fn result(&self) -> (Value, BasicProperties) {
        let message = self
            .take(&self.replies(), Duration::from_secs(10))
            .await
            .expect("a stage-result within 10 s");
        let body = serde_json::from_slice(&message.delivery.data).expect("a JSON result");
        (body, message.delivery.properties.clone())
    }

    /// The next result on `P.replies` for `dispatch`, skipping others (a dispatch handled twice
    /// after a dropped connection answers twice).
    pub async fn result_for(&self, dispatch: &Value) -> Value {
        loop {
            let (result, _) = self.result().await;
            if result["task_id"] == dispatch["task_id"] {
                return result;
            }
        }
    }

    /// Messages ready in `queue`.
    pub async fn ready(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let channel = self.connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .expect("passive declare");
        let _ = channel.close(200, "done".into()).await;
        declared.message_count()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let mut queues = vec![format!("{prefix}.replies"), format!("{prefix}.results")];
        queues.extend(
            self.worker_ids
                .iter()
                .map(|w| format!("{prefix}.worker.{w}")),
        );
        let exchanges = [format!("{prefix}.dispatch"), format!("{prefix}.events")];
        // Drop cannot await, and may run inside the test's runtime: delete from a thread with
        // a runtime of its own.
        let deleting = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(delete(queues, exchanges));
        });
        let _ = deleting.join();
    }
}

async fn delete(queues: Vec<String>, exchanges: [String; 2]) {
    let Ok(connection) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in queues {
            let _ = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in exchanges {
            let _ = channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test cleanup".into()).await;
}

/// A worker serving in the background until [`Running::stop`] or drop.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl Running {
    pub fn serve(worker: Worker, url: String) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            worker
                .serve(&url, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the worker and waits (up to `limit`) for `serve` to return.
    pub async fn stop(mut self, limit: Duration) {
        drop(self.stop.take());
        tokio::time::timeout(limit, &mut self.task)
            .await
            .expect("the worker stopped in time")
            .expect("the worker task ended cleanly");
    }
}

/// Waits up to 20 s for a notice `wanted` accepts; returns it.
pub async fn wait_notice(
    notices: &mut mpsc::UnboundedReceiver<Notice>,
    wanted: impl Fn(&Notice) -> bool,
) -> Notice {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, notices.recv()).await {
            Ok(Some(notice)) if wanted(&notice) => return notice,
            Ok(Some(other)) => seen.push(other.to_string()),
            Ok(None) => panic!("the worker's notices ended; seen: {seen:?}"),
            Err(_) => panic!("no such notice within 20 s; seen: {seen:?}"),
        }
    }
}

/// Waits until the worker consumes.
pub async fn consuming(notices: &mut mpsc::UnboundedReceiver<Notice>) {
    wait_notice(notices, |n| matches!(n, Notice::Consuming { .. })).await;
}
