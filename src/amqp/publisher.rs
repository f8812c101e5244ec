//! Publishing JSON messages with publisher confirms.

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;

/// Why a publish did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("not connected to the broker")]
    NotConnected,
}

/// Pauses before each new attempt to publish refused messages.
const NACK_RETRY_PAUSES_MS: [u64; 3] = [20, 100, 500];

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Outgoing {
    /// A persistent JSON message with the given AMQP `type`.
    pub fn json<T: Serialize>(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        kind: &str,
        body: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body: serde_json::to_vec(body)?,
            properties: BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_type(kind.into()),
        })
    }
}

/// A channel in confirm mode. Cheap to clone; clones share the channel.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes every message, then waits for all their confirms: one round trip, not one each.
    /// Messages the broker refuses (a quorum queue may nack while it elects a leader) are
    /// published again a few times before the refusal is returned; a receiver may therefore
    /// see one twice, as at-least-once delivery allows.
    pub async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), PublishError> {
        let mut todo: Vec<&Outgoing> = messages.iter().collect();
        let mut pauses = NACK_RETRY_PAUSES_MS.iter();
        loop {
            let mut pending = Vec::with_capacity(todo.len());
            for message in &todo {
                let confirm = self
                    .channel
                    .basic_publish(
                        message.exchange.as_str().into(),
                        message.routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &message.body,
                        message.properties.clone(),
                    )
                    .await?;
                pending.push(confirm);
            }
            let mut refused = Vec::new();
            for (message, confirm) in todo.into_iter().zip(pending) {
                if let Confirmation::Nack(_) = confirm.await? {
                    refused.push(message);
                }
            }
            if refused.is_empty() {
                return Ok(());
            }
            let Some(pause_ms) = pauses.next() else {
                return Err(PublishError::Nacked);
            };
            tracing::warn!(
                messages = refused.len(),
                pause_ms,
                "the broker refused messages; publishing them again"
            );
            todo = refused;
            tokio::time::sleep(std::time::Duration::from_millis(*pause_ms)).await;
        }
    }

    pub async fn publish(&self, message: Outgoing) -> Result<(), PublishError> {
        self.publish_all(vec![message]).await
    }
}
