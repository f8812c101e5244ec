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

/// Declares the exchanges, the results queue and the dead-letter queue. Idempotent.
pub async fn declare(channel: &Channel, names: &Names) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            names.dispatch_exchange().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.events_exchange().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.dead_exchange().into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            names.dead_queue().into(),
            durable_queue(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            names.dead_queue().into(),
            names.dead_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
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
    channel
        .exchange_declare(
            names.dispatch_exchange().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    let queue = names.worker_queue(worker_id);
    channel
        .queue_declare(queue.clone().into(), durable_queue(), quorum_arguments())
        .await?;
    channel
        .queue_bind(
            queue.into(),
            names.dispatch_exchange().into(),
            worker_id.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
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
