//! job-manager: a coordinator for multi-stage file-processing pipelines over RabbitMQ and MongoDB.
//!
//! The design is in `docs/` (beside `src/`), starting at `docs/README.md`: vocabulary, job
//! semantics, the protocol, the consistency argument, scaling, and a diagram of these parts.
//!
//! # The module map, from the inside out
//! Arrows of use point inwards: the domain uses nothing; the coordinator uses the domain and
//! the ports; the edges (store, amqp, http) implement or call those, never the other way.
//!
//! - [`domain`]: the pure core, no I/O. Ids, time, pipelines and their validation, machines,
//!   new-job requests, value rules, jobs, the input mapping and the job state machine
//!   (`domain::engine`: `apply_in_place`; planning a stage's tasks, the fan-out, in
//!   `domain/engine/stages.rs` with `domain/mapping.rs` `plan_inputs`).
//! - [`messages`]: the RabbitMQ wire types.
//! - [`ports`]: what the coordinator needs from the job store ([`ports::JobStore`]) and the
//!   broker ([`ports::Broker`]), and the handler the result consumer is given
//!   ([`ports::DeliveryHandler`]).
//! - [`coordinator`]: the shell: coalesces a job's events, applies them with the engine, writes
//!   them with one compare-and-set, then dispatches, notifies and archives. Its parts are listed
//!   in its own header.
//! - [`intake`]: what a result delivery means and how hard to try before settling it; the
//!   consumer's handler.
//! - [`sweep`]: timeouts, re-publishing unconfirmed dispatches, finishing interrupted archives.
//! - [`clock`]: the time replicas agree on (the database server's clock).
//! - [`store`]: MongoDB behind the job-store port, plus the catalog and listings.
//! - [`amqp`]: RabbitMQ: topology, the session, the confirming publisher, the broker port's
//!   implementation and the result consumer.
//! - [`services`]: what the REST handlers call besides the coordinator: the catalog of
//!   pipelines and machines, the read-side queries, results posted over HTTP.
//! - [`access`]: API tokens, roles and what a role may see.
//! - [`http`]: the REST API, one route list per resource, each route with its documentation.
//! - [`openapi`]: a small model of an OpenAPI 3.1 document, which `http` fills from its routes.
//! - [`schemas`]: JSON Schemas of every message and body, generated from the types.
//! - [`config`], [`telemetry`], [`meter`]: settings, logging and Prometheus metrics.
//! - [`backoff`]: capped exponential pauses between retries.
//! - [`app`]: wires everything into `job-manager serve`.
//! - [`cli`]: operator commands over the REST API.
//! - [`demo`]: the bundled demo pipeline and its workers (on the `job-manager-worker` crate,
//!   `sdk/rust/`, which Rust workers use).
//! - `fakes` (tests and the `testing` feature only): in-memory store and broker, and the
//!   shared store suite run against both stores.
//!
//! # Three questions a newcomer asks
//! - *Where is the fan-out rule?* `domain/mapping.rs` `plan_inputs` turns the mapped outputs
//!   into one input set per task; `domain/engine/stages.rs` `advance` makes them tasks
//!   (docs/semantics.md, "Fan-out and fan-in").
//! - *What happens between a result arriving and the next dispatch?* `amqp::consumer` →
//!   [`intake::Intake`] → `Coordinator::handle` → `coordinator/write.rs` → the engine →
//!   compare-and-set → `coordinator/effects.rs` → confirmed publish → outbox mark → ack
//!   (docs/consistency.md, "A result arrives, the next dispatch is confirmed, ack").
//! - *How do I add a field to the job record?* `domain/job.rs` `Job`, the engine,
//!   `store/update.rs` `job_update`, `JobView`, the schemas (docs/scaling.md, "Adding a field
//!   to the job record").
//!
//! Outside this crate: `tools/` (the benchmark and the chaos run, `job-manager-tools`) and
//! `sdk/rust/` (`job-manager-worker`) and `sdk/python/`.

pub mod access;
pub mod amqp;
pub mod app;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod demo;
pub mod domain;
#[cfg(any(test, feature = "testing"))]
pub mod fakes;
pub mod http;
pub mod intake;
pub mod messages;
pub mod meter;
pub mod openapi;
pub mod ports;
pub mod schemas;
pub mod services;
pub mod store;
pub mod sweep;
pub mod telemetry;
