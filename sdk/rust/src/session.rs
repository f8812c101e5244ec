//! One session on one connection: declare, consume the worker queue and the abort events, start
//! a task per dispatch, until the worker stops or the connection fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::{Delivery, DeliveryResult};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, Consumer, ExchangeKind};
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};

use crate::aborted::{Aborted, covers};
use crate::flag::Flag;
use crate::handle::{Context, handle};
use crate::notice::Notice;
use crate::task::Task;
use crate::wire::{Dispatch, JobEvent};
use crate::worker::Worker;

/// How often the session checks that its connection and channels are open. A consumer is
/// usually told of a lost connection at once, but not always (lapin may drop the notice while
/// it tears the connection down), and a session that missed it would wait for ever.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);
/// How long closing a channel at shutdown may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a session ended other than by the worker stopping.
#[derive(Debug)]
pub(crate) enum SessionError {
    /// Declaring or consuming failed: nothing was consumed.
    Setup(lapin::Error),
    /// The connection or a channel failed while consuming.
    Lost(lapin::Error),
}

impl SessionError {
    pub(crate) fn into_inner(self) -> lapin::Error {
        match self {
            SessionError::Setup(error) | SessionError::Lost(error) => error,
        }
    }
}

fn lost(reason: &str) -> SessionError {
    SessionError::Lost(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, reason).into())
}

/// Deliveries of a consumer, as a channel a `select!` can wait on.
fn forward(consumer: &Consumer) -> mpsc::UnboundedReceiver<DeliveryResult> {
    let (sender, receiver) = mpsc::unbounded_channel();
    consumer.set_delegate(move |delivery: DeliveryResult| {
        let sender = sender.clone();
        async move {
            // The session has ended when nobody receives; the broker requeues what it held.
            let _ = sender.send(delivery);
        }
    });
    receiver
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Declares the worker queue exactly as the coordinator does (durable, quorum, nothing else),
/// bound to `P.dispatch`, and consumes it with manual acks.
async fn consume_dispatches(
    connection: &Connection,
    worker: &Worker,
) -> Result<(Channel, Consumer), lapin::Error> {
    let settings = &worker.settings;
    let channel = connection.create_channel().await?;
    let exchange = format!("{}.dispatch", settings.prefix);
    channel
        .exchange_declare(
            exchange.clone().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let queue = worker.queue();
    channel
        .queue_declare(queue.clone().into(), durable, arguments)
        .await?;
    channel
        .queue_bind(
            queue.clone().into(),
            exchange.into(),
            settings.worker_id.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Binds a queue of the session's own to `job.aborted` on `P.events`.
async fn consume_aborts(
    connection: &Connection,
    prefix: &str,
) -> Result<(Channel, Consumer), lapin::Error> {
    let channel = connection.create_channel().await?;
    let exchange = format!("{prefix}.events");
    channel
        .exchange_declare(
            exchange.clone().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    let own = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare("".into(), own, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "job.aborted".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// The tasks a session is running, so an abort can reach them.
#[derive(Default)]
struct Running {
    tasks: HashMap<Id, Task>,
    set: JoinSet<()>,
}

/// What a session holds open.
struct Open {
    /// The worker queue's channel, with its consumer.
    consume: Channel,
    dispatches: Consumer,
    /// A channel in confirm mode for the results.
    publisher: Channel,
    /// The abort listener's channel, with its consumer.
    listen: Channel,
    aborts: Consumer,
}

impl Open {
    async fn new(worker: &Worker, connection: &Connection) -> Result<Self, lapin::Error> {
        let (consume, dispatches) = consume_dispatches(connection, worker).await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (listen, aborts) = consume_aborts(connection, &worker.settings.prefix).await?;
        Ok(Self {
            consume,
            dispatches,
            publisher,
            listen,
            aborts,
        })
    }

    fn alive(&self) -> bool {
        [&self.consume, &self.publisher, &self.listen]
            .iter()
            .all(|c| c.status().connected())
    }
}

/// Runs one session until `stop` (then `Ok`, after the tasks in hand have ended or been handed
/// back) or until the connection fails.
pub(crate) async fn run(
    worker: &Worker,
    connection: &Connection,
    stop: &Flag,
) -> Result<(), SessionError> {
    let open = Open::new(worker, connection)
        .await
        .map_err(SessionError::Setup)?;
    let mut deliveries = forward(&open.dispatches);
    let mut events = forward(&open.aborts);
    worker.notify(Notice::Consuming {
        worker_id: worker.settings.worker_id.clone(),
        queue: worker.queue(),
    });
    let context = Arc::new(Context {
        settings: worker.settings.clone(),
        handler: worker.handler.clone(),
        publisher: open.publisher.clone(),
        stop: stop.clone(),
    });
    let mut running = Running::default();
    let mut aborted = Aborted::default();
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    let ended = loop {
        tokio::select! {
            _ = stop.wait() => break Ok(()),
            _ = liveness.tick() => if !open.alive() {
                break Err(lost("the connection to the broker, or a channel of it, closed"));
            },
            delivery = deliveries.recv() => match delivery {
                Some(Ok(Some(delivery))) => {
                    start(worker, &context, &mut running, &aborted, delivery).await;
                }
                Some(Err(error)) => break Err(SessionError::Lost(error)),
                Some(Ok(None)) | None => break Err(lost("the broker cancelled the consumer")),
            },
            event = events.recv() => match event {
                Some(Ok(Some(event))) => on_event(&event.data, &running, &mut aborted),
                Some(Err(error)) => break Err(SessionError::Lost(error)),
                Some(Ok(None)) | None => break Err(lost("the broker cancelled the abort listener")),
            },
            Some(joined) = running.set.join_next_with_id(), if !running.set.is_empty() => {
                running.tasks.remove(&joined.map_or_else(|e| e.id(), |(id, ())| id));
            }
        }
    };
    // No new deliveries; what was prefetched and not started goes back when the channel closes.
    drop(open.dispatches);
    // After a failure the tasks could not settle their dispatches anyway: returning drops the
    // set, which stops them, and the broker delivers the dispatches again. A broken
    // connection's channels are not closed: the close would wait for an answer that never comes.
    ended?;
    while running.set.join_next().await.is_some() {}
    for channel in [open.consume, open.publisher, open.listen] {
        let closing = channel.close(200, "worker stopping".into());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
    Ok(())
}

/// Starts the task of a delivery, or settles a delivery that will not run.
async fn start(
    worker: &Worker,
    context: &Arc<Context>,
    running: &mut Running,
    aborted: &Aborted,
    delivery: Delivery,
) {
    let dispatch: Dispatch = match serde_json::from_slice(&delivery.data) {
        Ok(dispatch) => dispatch,
        Err(error) => {
            worker.notify(Notice::MalformedDispatch {
                worker_id: worker.settings.worker_id.clone(),
                error: error.to_string(),
            });
            let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
            return;
        }
    };
    if aborted.contains(&dispatch.job_id, &dispatch.run_id) {
        worker.notify(Notice::SkippedAborted {
            task_id: dispatch.task_id.clone(),
            job_id: dispatch.job_id.clone(),
        });
        let _ = delivery.ack(BasicAckOptions::default()).await;
        return;
    }
    let task = Task::new(dispatch);
    let spawned = running
        .set
        .spawn(handle(delivery, task.clone(), context.clone()));
    running.tasks.insert(spawned.id(), task);
}

/// Remembers an aborted run and cancels its running tasks.
fn on_event(body: &[u8], running: &Running, aborted: &mut Aborted) {
    let Ok(event) = serde_json::from_slice::<JobEvent>(body) else {
        return;
    };
    if event.status != "aborted" {
        return;
    }
    aborted.insert(&event.job_id, event.run_id.as_deref());
    for task in running.tasks.values() {
        if covers(
            &event.job_id,
            event.run_id.as_deref(),
            task.job_id(),
            task.run_id(),
        ) {
            task.cancel();
        }
    }
}
