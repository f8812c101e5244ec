//! job-manager: a coordinator for multi-stage file-processing pipelines over RabbitMQ and MongoDB.
//!
//! # Layout
//! - [`domain`]: the pure core (pipelines, jobs, ids, input mapping, the job state machine).
//! - [`messages`]: the RabbitMQ wire types and their checks.
//! - [`store`]: MongoDB collections, compare-and-set writes and archiving.
//! - [`amqp`]: topology, the confirming publisher and the result consumer.
//! - [`coordinator`]: the shell that applies events to jobs and carries out the effects.
//! - [`http`]: the REST API, one router per resource.
//! - [`worker`]: a helper for writing workers in Rust.
//! - [`demo`]: the bundled demo pipeline and its workers.
//! - [`config`], [`telemetry`]: settings and logging.
//! - [`app`]: wires everything into a running service.

pub mod domain;
pub mod messages;
