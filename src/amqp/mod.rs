//! RabbitMQ: the topology of DESIGN §4, a confirming publisher and the result consumer.

pub mod consumer;
pub mod link;
pub mod publisher;
pub mod topology;

pub use link::{Link, Session};
pub use publisher::Publisher;
pub use topology::Names;

use lapin::{Connection, ConnectionProperties};

/// Opens a connection to `url` named for the broker's management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties).await
}
