//! RabbitMQ behind the [`Broker`] port: dispatches go to the dispatch exchange with the task id
//! as message id and correlation id and the job's result partition as `reply_to`; job events go
//! to the events exchange (docs/protocol.md, "Messages").

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::publisher::{Outgoing, PublishError};
use super::{Link, Names, topology};
use crate::messages::{DISPATCH_TYPE, StageDispatch};
use crate::ports::{Announced, Broker, BrokerError};

impl From<PublishError> for BrokerError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Encode(error) => Self::Encode(error.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<lapin::Error> for BrokerError {
    fn from(error: lapin::Error) -> Self {
        Self::Unavailable(format!("amqp: {error}"))
    }
}

/// The broker as the coordinator sees it: the current session of a [`Link`], and the worker
/// queues this process has declared on it. Cheap to clone.
#[derive(Clone)]
pub struct RabbitBroker {
    link: Link,
    names: Names,
    /// Worker queues declared since the last reconnect; std mutex, never held across `.await`.
    declared: Arc<Mutex<HashSet<String>>>,
}

impl RabbitBroker {
    pub fn new(link: Link, names: Names) -> Self {
        Self {
            link,
            names,
            declared: Arc::default(),
        }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Forgets which worker queues were declared, so the next dispatch declares them again
    /// (after a reconnect the broker may have lost non-durable state).
    pub fn forget_declared_queues(&self) {
        if let Ok(mut set) = self.declared.lock() {
            set.clear();
        }
    }

    async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
        let session = self.link.current().ok_or(PublishError::NotConnected)?;
        Ok(session.publisher.publish_all(messages).await?)
    }

    async fn ensure_worker_queue(&self, worker_id: &str) -> Result<(), BrokerError> {
        let known = self
            .declared
            .lock()
            .map(|set| set.contains(worker_id))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        // A channel of its own: a declare the broker refuses closes the channel it ran on.
        let session = self.link.current().ok_or(PublishError::NotConnected)?;
        let channel = session.connection.create_channel().await?;
        let declared = topology::declare_worker_queue(&channel, &self.names, worker_id).await;
        if channel.status().connected() {
            let _ = channel.close(200, "declared".into()).await;
        }
        declared?;
        if let Ok(mut set) = self.declared.lock() {
            set.insert(worker_id.to_owned());
        }
        Ok(())
    }

    async fn publish_dispatches(
        &self,
        worker_id: &str,
        dispatches: &[StageDispatch],
    ) -> Result<(), BrokerError> {
        self.ensure_worker_queue(worker_id).await?;
        let exchange = self.names.dispatch_exchange();
        let mut messages = Vec::with_capacity(dispatches.len());
        for dispatch in dispatches {
            let reply_to = self.names.results_queue_of(dispatch.job_id.as_str());
            let mut message = Outgoing::json(exchange.clone(), worker_id, DISPATCH_TYPE, dispatch)
                .map_err(PublishError::from)?;
            let task_id = dispatch.task_id.as_str();
            message.properties = message
                .properties
                .with_message_id(task_id.into())
                .with_correlation_id(task_id.into())
                .with_reply_to(reply_to.into());
            messages.push(message);
        }
        self.publish_all(messages).await
    }

    async fn publish_events(&self, events: &[Announced]) -> Result<(), BrokerError> {
        let exchange = self.names.events_exchange();
        let mut messages = Vec::with_capacity(events.len());
        for announced in events {
            let key = announced.routing_key.as_str();
            let kind = announced.event.message_type();
            let message = Outgoing::json(exchange.clone(), key, kind, &announced.event)
                .map_err(PublishError::from)?;
            messages.push(message);
        }
        self.publish_all(messages).await
    }
}

impl Broker for RabbitBroker {
    fn dispatch<'a>(
        &'a self,
        worker_id: &'a str,
        dispatches: &'a [StageDispatch],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.publish_dispatches(worker_id, dispatches).boxed()
    }

    fn notify<'a>(&'a self, events: &'a [Announced]) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.publish_events(events).boxed()
    }

    fn is_connected(&self) -> bool {
        self.link.is_connected()
    }
}
