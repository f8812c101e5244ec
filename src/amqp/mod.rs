//! RabbitMQ: the topology (docs/protocol.md, "Queues and exchanges"), the session and its
//! confirming publisher, the `Broker` port's implementation (`broker.rs`) and the result
//! consumer, which hands deliveries to the handler it is given.

pub mod broker;
pub mod consumer;
pub mod link;
pub mod partitions;
pub mod publisher;
pub mod topology;

pub use link::{Link, Session};
pub use publisher::Publisher;
pub use topology::Names;

/// Opening a connection, with a heartbeat unless the URL names one and a timeout on the
/// handshake: the same for the service as for workers, so it is the worker crate's
/// (`sdk/rust/src/connect.rs`, tested there).
pub use job_manager_worker::{CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_S, connect};
