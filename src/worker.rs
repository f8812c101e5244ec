//! A helper for writing workers in Rust: consume a worker queue, call an async handler, publish
//! the stage-result to the dispatch's `reply_to`, then ack.

use crate::backoff::Backoff;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, message::Delivery};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::amqp::publisher::Outgoing;
use crate::amqp::{Names, Publisher, topology};
use crate::messages::{RESULT_TYPE, StageDispatch, StageResult};

/// What a handler returns for a task it completed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerOutput {
    /// An object, a list of objects and `null`s, or `null`.
    pub outputs: Value,
    pub log: Option<String>,
}

impl WorkerOutput {
    pub fn new(outputs: Value) -> Self {
        Self { outputs, log: None }
    }

    pub fn with_log(mut self, log: impl Into<String>) -> Self {
        self.log = Some(log.into());
        self
    }
}

/// Consumes `P.worker.<worker_id>` until `shutdown`, calling `handler` for each dispatch. An
/// `Err(message)` from the handler (or a panic) is reported as the result's `error`.
pub async fn run<H, Fut>(
    connection: &Connection,
    names: &Names,
    worker_id: &str,
    prefetch: u16,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), lapin::Error>
where
    H: Fn(StageDispatch) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<WorkerOutput, String>> + Send + 'static,
{
    let channel = connection.create_channel().await?;
    topology::declare_worker_queue(&channel, names, worker_id).await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let publisher = Publisher::open(connection).await?;
    let queue = names.worker_queue(worker_id);
    let mut consumer = channel
        .basic_consume(
            queue.clone().into(),
            format!("{worker_id}-{}", uuid::Uuid::new_v4().simple()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!(queue = %queue, "worker consuming");
    let handler = Arc::new(handler);
    let default_reply = names.results_queue();
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let handler = handler.clone();
                    let publisher = publisher.clone();
                    let reply = default_reply.clone();
                    in_flight.spawn(async move { work(delivery, handler, publisher, reply).await });
                }
                Some(Err(error)) => return Err(error),
                None => break,
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
    let _ = channel.close(200, "worker stopped".into()).await;
    let _ = publisher
        .channel()
        .close(200, "worker stopped".into())
        .await;
    Ok(())
}

async fn work<H, Fut>(
    delivery: Delivery,
    handler: Arc<H>,
    publisher: Publisher,
    default_reply: String,
) where
    H: Fn(StageDispatch) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<WorkerOutput, String>> + Send + 'static,
{
    let dispatch: StageDispatch = match serde_json::from_slice(&delivery.data) {
        Ok(dispatch) => dispatch,
        Err(e) => {
            error!(error = %e, "dropping a malformed dispatch");
            let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
            return;
        }
    };
    let reply_to = delivery
        .properties
        .reply_to()
        .as_ref()
        .map(|r| r.as_str().to_owned())
        .unwrap_or(default_reply);
    let task_id = dispatch.task_id.clone();
    let job_id = dispatch.job_id.clone();
    let run_id = Some(dispatch.run_id.clone());
    // Run the handler in its own task so a panic becomes an error result, not a lost message.
    let outcome = match tokio::spawn(handler(dispatch)).await {
        Ok(outcome) => outcome,
        Err(join) => Err(format!("worker handler panicked: {join}")),
    };
    let result = match outcome {
        Ok(output) => StageResult {
            task_id: task_id.clone(),
            job_id,
            run_id,
            outputs: output.outputs,
            log: output.log,
            error: None,
        },
        Err(message) => StageResult {
            task_id: task_id.clone(),
            job_id,
            run_id,
            outputs: Value::Null,
            log: None,
            error: Some(message),
        },
    };
    let published = match Outgoing::json("", reply_to, RESULT_TYPE, &result) {
        Ok(mut message) => {
            message.properties = message
                .properties
                .with_correlation_id(task_id.as_str().into());
            publisher.publish(message).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let settled = match published {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
        Err(error) => {
            warn!(task_id = %task_id, %error, "result not published; returning the task to the queue");
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
        }
    };
    if let Err(error) = settled {
        warn!(task_id = %task_id, %error, "could not settle a dispatch");
    }
}

/// Like [`run`], but owns its connection to `url` and reconnects with backoff whenever it is
/// lost, until `shutdown`.
pub async fn serve<H, Fut>(
    url: &str,
    names: &Names,
    worker_id: &str,
    prefetch: u16,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(StageDispatch) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<WorkerOutput, String>> + Send + 'static,
{
    let first = std::time::Duration::from_millis(200);
    let mut backoff = Backoff::new(first, std::time::Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        match crate::amqp::connect(url, &format!("worker {worker_id}")).await {
            Ok(connection) => {
                backoff = Backoff::new(first, std::time::Duration::from_secs(5));
                let result = run(
                    &connection,
                    names,
                    worker_id,
                    prefetch,
                    handler.clone(),
                    shutdown.clone(),
                )
                .await;
                let _ = connection.close(200, "worker stopping".into()).await;
                if shutdown.is_cancelled() {
                    return;
                }
                warn!(
                    worker_id,
                    ?result,
                    "worker lost its connection; reconnecting"
                );
            }
            Err(error) => warn!(worker_id, %error, "worker cannot reach rabbitmq"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.pause()) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
