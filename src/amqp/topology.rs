//! Names and declarations of the exchanges and queues (docs/protocol.md, "Queues and exchanges").

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};
use tracing::warn;

use super::partitions::{RESULT_PARTITIONS, partition_of};

/// How often a result may be redelivered before the quorum queue dead-letters it.
pub const RESULTS_DELIVERY_LIMIT: i64 = 20;

/// Most messages `P.results.dead` keeps; beyond, the oldest are dropped.
pub const DEAD_QUEUE_MAX_LENGTH: i64 = 100_000;
/// Most bytes of message bodies `P.results.dead` keeps (1 GiB); beyond, the oldest are dropped.
pub const DEAD_QUEUE_MAX_BYTES: i64 = 1024 * 1024 * 1024;

/// How much `P.results.dead` holds before it drops its oldest messages (`x-overflow: drop-head`),
/// so a flood of poison results cannot fill the broker's disk, while the newest, which explain a
/// live problem, stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadQueueBound {
    /// `x-max-length`: messages.
    pub max_length: i64,
    /// `x-max-length-bytes`: bytes of message bodies.
    pub max_bytes: i64,
}

impl Default for DeadQueueBound {
    fn default() -> Self {
        Self {
            max_length: DEAD_QUEUE_MAX_LENGTH,
            max_bytes: DEAD_QUEUE_MAX_BYTES,
        }
    }
}

impl DeadQueueBound {
    fn arguments(self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(self.max_length),
        );
        arguments.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(self.max_bytes),
        );
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from("drop-head")),
        );
        arguments
    }
}

/// How `P.results.dead` came out of [`declare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadQueue {
    /// Declared (or found) with the bound asked for.
    Bounded,
    /// It already existed with other arguments (an earlier version declared it unbounded), so it
    /// is used as it is; a warning told the operator how to bound it.
    Existing,
}

/// Every name the protocol uses, derived from the prefix `P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P.dispatch`, direct.
    pub fn dispatch_exchange(&self) -> String {
        format!("{}.dispatch", self.prefix)
    }

    /// `P.worker.<worker_id>`, bound to the dispatch exchange with key `<worker_id>`.
    pub fn worker_queue(&self, worker_id: &str) -> String {
        format!("{}.worker.{worker_id}", self.prefix)
    }

    /// `P.results`: the shared results queue, consumed by every replica. Dispatches name a
    /// partition as `reply_to` instead; a worker that replies here anyway is still served.
    pub fn results_queue(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// `P.results.NN`: result partition `n` (two digits), consumed by one replica at a time.
    pub fn result_partition(&self, n: u16) -> String {
        format!("{}.results.{n:02}", self.prefix)
    }

    /// Every result partition, in order.
    pub fn result_partitions(&self) -> Vec<String> {
        (0..RESULT_PARTITIONS)
            .map(|n| self.result_partition(n))
            .collect()
    }

    /// Every queue the service declares (worker queues apart): the results queue, its
    /// partitions and the dead-letter queue; what a cleanup deletes.
    pub fn service_queues(&self) -> Vec<String> {
        let mut queues = vec![self.results_queue()];
        queues.extend(self.result_partitions());
        queues.push(self.dead_queue());
        queues
    }

    /// The partition a job's results are routed to: the `reply_to` of its dispatches.
    pub fn results_queue_of(&self, job_id: &str) -> String {
        self.result_partition(partition_of(job_id))
    }

    /// `P.dead`, fanout.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// `P.results.dead`.
    pub fn dead_queue(&self) -> String {
        format!("{}.results.dead", self.prefix)
    }

    /// `P.events`, topic.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    arguments
}

async fn exchange(channel: &Channel, name: String, kind: ExchangeKind) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(name.into(), kind, durable_exchange(), FieldTable::default())
        .await
}

async fn bind(
    channel: &Channel,
    queue: String,
    exchange: String,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares the exchanges, the results queue and its partitions and the dead-letter queue, with the default
/// [`DeadQueueBound`]. Idempotent.
pub async fn declare(connection: &Connection, names: &Names) -> Result<DeadQueue, lapin::Error> {
    declare_bounded(connection, names, DeadQueueBound::default()).await
}

/// Like [`declare`], with the dead-letter queue bounded by `bound`. Opens its own channels: a
/// dead-letter queue that already exists with other arguments makes the broker close the channel
/// (PRECONDITION_FAILED), and the rest is declared on a fresh one.
pub async fn declare_bounded(
    connection: &Connection,
    names: &Names,
    bound: DeadQueueBound,
) -> Result<DeadQueue, lapin::Error> {
    let mut channel = connection.create_channel().await?;
    exchange(&channel, names.dispatch_exchange(), ExchangeKind::Direct).await?;
    exchange(&channel, names.events_exchange(), ExchangeKind::Topic).await?;
    exchange(&channel, names.dead_exchange(), ExchangeKind::Fanout).await?;
    let dead = match channel
        .queue_declare(
            names.dead_queue().into(),
            durable_queue(),
            bound.arguments(),
        )
        .await
    {
        Ok(_) => DeadQueue::Bounded,
        Err(error) if is_precondition_failed(&error) => {
            channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..durable_queue()
            };
            channel
                .queue_declare(names.dead_queue().into(), passive, FieldTable::default())
                .await?;
            warn!(
                queue = %names.dead_queue(),
                %error,
                hint = %bound_hint(names, bound),
                "dead-letter queue exists with other arguments and may grow without bound; using it as it is"
            );
            DeadQueue::Existing
        }
        Err(error) => return Err(error),
    };
    bind(&channel, names.dead_queue(), names.dead_exchange(), "").await?;
    channel
        .queue_declare(
            names.results_queue().into(),
            durable_queue(),
            results_arguments(names, false),
        )
        .await?;
    for partition in names.result_partitions() {
        let arguments = results_arguments(names, true);
        channel
            .queue_declare(partition.into(), durable_queue(), arguments)
            .await?;
    }
    channel.close(200, "topology declared".into()).await?;
    Ok(dead)
}

/// The arguments of a results queue: quorum, dead-lettering to `P.dead` after
/// [`RESULTS_DELIVERY_LIMIT`] deliveries, and for a partition a single active consumer.
fn results_arguments(names: &Names, single_active: bool) -> FieldTable {
    let mut arguments = quorum_arguments();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(names.dead_exchange())),
    );
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(RESULTS_DELIVERY_LIMIT),
    );
    if single_active {
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    arguments
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

/// What an operator runs to bound a dead-letter queue declared without a bound.
fn bound_hint(names: &Names, bound: DeadQueueBound) -> String {
    let pattern = format!("^{}$", regex_escape(&names.dead_queue()));
    format!(
        "rabbitmqctl set_policy --apply-to queues {prefix}-dead-bound '{pattern}' \
         '{{\"max-length\":{length},\"max-length-bytes\":{bytes},\"overflow\":\"drop-head\"}}', \
         or, once every replica runs this version, rabbitmqctl delete_queue {queue} (its messages are lost) \
         and restart a replica",
        prefix = names.prefix(),
        length = bound.max_length,
        bytes = bound.max_bytes,
        queue = names.dead_queue(),
    )
}

/// `text` as a regular expression matching it literally (RabbitMQ policy patterns are regexes).
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Declares a worker's queue exactly as any worker may (durable, quorum, nothing else) and binds
/// it to the dispatch exchange, declaring that too so a worker may start before the coordinator.
pub async fn declare_worker_queue(
    channel: &Channel,
    names: &Names,
    worker_id: &str,
) -> Result<(), lapin::Error> {
    exchange(channel, names.dispatch_exchange(), ExchangeKind::Direct).await?;
    let queue = names.worker_queue(worker_id);
    channel
        .queue_declare(queue.clone().into(), durable_queue(), quorum_arguments())
        .await?;
    bind(channel, queue, names.dispatch_exchange(), worker_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let names = Names::new("job-manager");
        assert_eq!(names.dispatch_exchange(), "job-manager.dispatch");
        assert_eq!(
            names.worker_queue("trim-csv"),
            "job-manager.worker.trim-csv"
        );
        assert_eq!(names.results_queue(), "job-manager.results");
        assert_eq!(names.result_partition(7), "job-manager.results.07");
        assert_eq!(
            names.result_partitions().len(),
            usize::from(RESULT_PARTITIONS)
        );
        assert_eq!(
            names.results_queue_of("UVpxMTeqgMijLlbmNI8A_A"),
            names.result_partition(partition_of("UVpxMTeqgMijLlbmNI8A_A"))
        );
        assert_eq!(names.dead_exchange(), "job-manager.dead");
        assert_eq!(names.dead_queue(), "job-manager.results.dead");
        assert_eq!(names.events_exchange(), "job-manager.events");
    }

    #[test]
    fn the_bound_hint_names_a_policy_matching_only_the_dead_queue() {
        let hint = bound_hint(&Names::new("job-manager"), DeadQueueBound::default());
        assert!(
            hint.contains("rabbitmqctl set_policy --apply-to queues job-manager-dead-bound '^job-manager\\.results\\.dead$'"),
            "{hint}"
        );
        assert!(
            hint.contains(
                r#""max-length":100000,"max-length-bytes":1073741824,"overflow":"drop-head""#
            ),
            "{hint}"
        );
        assert!(
            hint.contains("rabbitmqctl delete_queue job-manager.results.dead"),
            "{hint}"
        );
    }
}
