//! Exponential backoff with a cap, for retries of operations that may succeed later: the
//! worker crate's (`sdk/rust/src/backoff.rs`, tested there), so the service and the workers
//! pause alike and the rule is written once.

pub use job_manager_worker::Backoff;
