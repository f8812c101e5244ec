//! One task: run the handler, publish its result with a confirm, and only then ack the dispatch.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::task::{JoinError, JoinHandle};

use crate::encode::{Outcome, encode_result};
use crate::flag::Flag;
use crate::notice::Notice;
use crate::task::Task;
use crate::wire::RESULT_TYPE;
use crate::worker::{Handler, Settings};

/// Pauses before publishing again a result the broker refused (a quorum queue may nack while it
/// elects a leader); after the last, the dispatch goes back to the queue.
const NACK_RETRY_PAUSES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

/// What every task of a session shares.
pub(crate) struct Context {
    pub(crate) settings: Arc<Settings>,
    pub(crate) handler: Handler,
    /// A channel in confirm mode.
    pub(crate) publisher: Channel,
    /// Set when the worker stops.
    pub(crate) stop: Flag,
}

/// Stops the handler when the task is dropped: on an abort, at the end of the grace period, or
/// when the session is lost. Cancelling a future is the only way to stop async work from
/// outside it; handlers see [`Task::is_cancelled`] for work that does not await.
struct AbortOnDrop(JoinHandle<Outcome>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Ended {
    Ran(Result<Outcome, JoinError>),
    Cancelled,
    HandedBack,
}

/// Returns `grace` after `stop` is set.
async fn grace_over(stop: &Flag, grace: Duration) {
    stop.wait().await;
    tokio::time::sleep(grace).await;
}

/// Runs the task of `delivery` and settles the delivery.
pub(crate) async fn handle(delivery: Delivery, task: Task, context: Arc<Context>) {
    let settings = &context.settings;
    let mut running = AbortOnDrop(tokio::spawn((context.handler)(task.clone())));
    let ended = tokio::select! {
        biased;
        joined = &mut running.0 => Ended::Ran(joined),
        _ = task.cancelled() => Ended::Cancelled,
        _ = grace_over(&context.stop, settings.grace) => Ended::HandedBack,
    };
    drop(running);
    // A handler that ended on its own as its job was aborted has nothing worth sending.
    let ended = if task.is_cancelled() {
        Ended::Cancelled
    } else {
        ended
    };
    let task_id = task.task_id().to_owned();
    let outcome = match ended {
        Ended::Ran(Ok(outcome)) => outcome,
        Ended::Ran(Err(error)) if error.is_panic() => Outcome::Failed(format!(
            "handler panicked: {}",
            panic_message(error.into_panic())
        )),
        // Nothing aborts the handler while it is awaited; kept for completeness.
        Ended::Ran(Err(_)) => Outcome::Failed("handler was cancelled".into()),
        Ended::Cancelled => {
            settings.notify(Notice::Cancelled {
                task_id,
                job_id: task.job_id().to_owned(),
            });
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return;
        }
        Ended::HandedBack => {
            settings.notify(Notice::HandedBack { task_id });
            let _ = delivery.nack(requeue()).await;
            return;
        }
    };
    let encoded = encode_result(task.dispatch(), outcome, task.log_text());
    if let Some(reason) = encoded.unsendable {
        settings.notify(Notice::UnsendableOutputs {
            task_id: task_id.clone(),
            reason,
        });
    }
    let reply_to = delivery
        .properties
        .reply_to()
        .as_ref()
        .map_or_else(|| format!("{}.results", settings.prefix), |r| r.to_string());
    match publish(&context.publisher, &reply_to, &task_id, &encoded.body).await {
        Ok(()) => {
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(error) => {
            settings.notify(Notice::NotPublished { task_id, error });
            let _ = delivery.nack(requeue()).await;
        }
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}

/// The text of a panic's payload.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Publishes a result to the default exchange with `reply_to` as the routing key, and waits
/// for the broker's confirm; a refusal is published again after each of [`NACK_RETRY_PAUSES`].
async fn publish(
    channel: &Channel,
    reply_to: &str,
    task_id: &str,
    body: &[u8],
) -> Result<(), String> {
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_correlation_id(task_id.into())
        .with_type(RESULT_TYPE.into());
    let mut pauses = NACK_RETRY_PAUSES.iter();
    loop {
        let confirmation = channel
            .basic_publish(
                "".into(),
                reply_to.into(),
                BasicPublishOptions::default(),
                body,
                properties.clone(),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if !matches!(confirmation, Confirmation::Nack(_)) {
            return Ok(());
        }
        let Some(pause) = pauses.next() else {
            return Err("the broker refused the result (nack)".into());
        };
        tokio::time::sleep(*pause).await;
    }
}
