//! Names and declarations of the exchanges and queues (DESIGN §4).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// How often a result may be redelivered before the quorum queue dead-letters it.
pub const RESULTS_DELIVERY_LIMIT: i64 = 20;

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

    /// `P.results`: workers reply here through the default exchange.
    pub fn results_queue(&self) -> String {
        format!("{}.results", self.prefix)
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

/// Declares the exchanges, the results queue and the dead-letter queue. Idempotent.
pub async fn declare(channel: &Channel, names: &Names) -> Result<(), lapin::Error> {
    exchange(channel, names.dispatch_exchange(), ExchangeKind::Direct).await?;
    exchange(channel, names.events_exchange(), ExchangeKind::Topic).await?;
    exchange(channel, names.dead_exchange(), ExchangeKind::Fanout).await?;
    channel
        .queue_declare(
            names.dead_queue().into(),
            durable_queue(),
            FieldTable::default(),
        )
        .await?;
    bind(channel, names.dead_queue(), names.dead_exchange(), "").await?;
    let mut results = quorum_arguments();
    results.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(names.dead_exchange())),
    );
    results.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(RESULTS_DELIVERY_LIMIT),
    );
    channel
        .queue_declare(names.results_queue().into(), durable_queue(), results)
        .await?;
    Ok(())
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

/// Deletes the queues (those of `worker_ids` too) and exchanges under the prefix, best effort:
/// for test, benchmark and chaos runs that clean up after themselves.
pub async fn delete(channel: &Channel, names: &Names, worker_ids: &[&str]) {
    let mut queues = vec![names.results_queue(), names.dead_queue()];
    queues.extend(worker_ids.iter().map(|w| names.worker_queue(w)));
    for queue in queues {
        let _ = channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await;
    }
    for exchange in [
        names.dispatch_exchange(),
        names.events_exchange(),
        names.dead_exchange(),
    ] {
        let _ = channel
            .exchange_delete(
                exchange.into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    }
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
        assert_eq!(names.dead_exchange(), "job-manager.dead");
        assert_eq!(names.dead_queue(), "job-manager.results.dead");
        assert_eq!(names.events_exchange(), "job-manager.events");
    }
}
