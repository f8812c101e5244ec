//! Write job-manager workers in Rust.
//!
//! A [`Worker`] consumes its queue `P.worker.<worker_id>`, calls an async handler with each
//! stage-dispatch as a [`Task`] (inputs, configs, a log, cancellation), and publishes the
//! stage-result to the dispatch's `reply_to`, confirmed by the broker before the dispatch is
//! acked. The protocol is `docs/protocol.md` in the job-manager repository; this crate is its
//! worker side, the Rust counterpart of the Python SDK in `sdk/python`.
//!
//! ```no_run
//! use job_manager_worker::{Task, Worker, amqp_url_from_env};
//! use serde_json::json;
//!
//! # async fn example() {
//! let worker = Worker::new("word-count", |task: Task| async move {
//!     let words = task.input_str("text")?.split_whitespace().count();
//!     task.log(format!("counted {words} words"));
//!     Ok::<_, String>(json!({"words": words}))
//! });
//! // Reconnects whenever the connection is lost, until ctrl-c.
//! worker
//!     .serve(&amqp_url_from_env(), async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await;
//! # }
//! ```
//!
//! # Layout
//! - `worker`: [`Worker`], its settings, and the reconnecting loop.
//! - `session`: one connection's declarations, consumers and abort listener.
//! - `handle`: one task: the handler, the result, the confirm, the ack.
//! - `encode`: the result body, and the checks that turn unsendable outputs into an error.
//! - [`wire`]: the messages as a worker sees them.
//! - `task`: [`Task`]. `notice`: [`Notice`]. `connect`: [`connect`].
//!
//! Dependencies are kept to lapin, tokio and serde: a worker links this crate into its own
//! program. The crate logs nothing itself; see [`Worker::on_notice`].

mod aborted;
mod backoff;
mod connect;
mod encode;
mod flag;
mod handle;
mod notice;
mod session;
mod task;
pub mod wire;
mod worker;

pub use backoff::Backoff;
pub use connect::{
    CONNECT_TIMEOUT, DEFAULT_AMQP_URL, DEFAULT_HEARTBEAT_S, amqp_url_from_env, connect,
};
pub use encode::{MAX_RESULT_BYTES, MAX_TEXT_BYTES};
pub use notice::Notice;
pub use task::Task;
pub use wire::Dispatch;
pub use worker::{DEFAULT_PREFIX, Worker};
