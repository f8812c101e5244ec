//! job-manager: a coordinator for multi-stage file-processing pipelines over RabbitMQ and MongoDB.
//!
//! # Layout
//! - [`domain`]: the pure core (pipelines, jobs, ids, input mapping, the job state machine).
//! - [`messages`]: the RabbitMQ wire types and their checks.
//! - [`store`]: MongoDB collections, compare-and-set writes and archiving.
//! - [`amqp`]: topology, the confirming publisher and the result consumer.
//! - [`coordinator`]: the shell that applies events to jobs and carries out the effects.
//! - [`http`]: the REST API, one router per resource.
//! - [`demo`]: the bundled demo pipeline and its workers (on the `job-manager-worker` crate,
//!   `sdk/rust/`, which Rust workers use).
//! - [`cli`]: operator commands over the REST API.
//! - [`sweep`]: the periodic sweep for timeouts, unconfirmed dispatches and interrupted archives.
//! - [`schemas`]: JSON Schemas of every message and body, generated from the types.
//! - [`openapi`]: the OpenAPI 3.1 document of the REST API.
//! - [`config`], [`telemetry`], [`meter`]: settings, logging and Prometheus metrics.
//! - [`backoff`]: capped exponential pauses between retries.
//! - [`clock`]: the time replicas agree on (the database server's clock).
//! - [`app`]: wires everything into a running service.
//! - `docs/` (beside `src/`): the design: vocabulary, job semantics, protocol, consistency and
//!   scaling, starting at `docs/README.md`.

pub mod amqp;
pub mod app;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod demo;
pub mod domain;
pub mod http;
pub mod messages;
pub mod meter;
pub mod openapi;
pub mod schemas;
pub mod store;
pub mod sweep;
pub mod telemetry;
