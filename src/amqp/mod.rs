//! RabbitMQ: the topology (docs/protocol.md, "Queues and exchanges"), a confirming publisher
//! and the result consumer.

pub mod broker;
pub mod consumer;
pub mod link;
pub mod publisher;
pub mod topology;

pub use link::{Link, Session};
pub use publisher::Publisher;
pub use topology::Names;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

/// The heartbeat asked for when the URL names none: a stalled connection is then noticed within
/// about 30 s instead of the broker's default of two minutes.
pub const DEFAULT_HEARTBEAT_S: u16 = 15;

/// How long opening a connection may take. The handshake has no timeout of its own, and a
/// broker that accepts the connection but does not answer (one still starting, a stalled
/// network) would otherwise hold the caller, and its reconnect loop, for ever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens a connection to `url` named for the broker's management UI; gives up after
/// [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let url = with_heartbeat(url);
    let connecting = Connection::connect(&url, properties);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer from the broker within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
        )
        .into()),
    }
}

/// `url` with a `heartbeat` query parameter, unless it has one.
fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={DEFAULT_HEARTBEAT_S}")
}

#[cfg(test)]
mod tests {
    use super::with_heartbeat;

    #[test]
    fn a_heartbeat_is_asked_for_unless_the_url_names_one() {
        assert_eq!(
            with_heartbeat("amqp://h:5672/%2f"),
            "amqp://h:5672/%2f?heartbeat=15"
        );
        assert_eq!(
            with_heartbeat("amqp://h/v?frame_max=8192"),
            "amqp://h/v?frame_max=8192&heartbeat=15"
        );
        assert_eq!(
            with_heartbeat("amqp://h/v?heartbeat=5"),
            "amqp://h/v?heartbeat=5"
        );
    }
}
