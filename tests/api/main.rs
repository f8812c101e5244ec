//! Integration tests against real RabbitMQ and a real MongoDB-wire server. `scripts/services.sh`
//! starts both; each test gets its own database name and queue prefix.

mod abort;
mod access;
mod browser;
mod budgets;
mod cli;
mod contract;
mod control;
mod dashboard;
mod errors;
mod faults;
mod flow;
mod hardening;
mod helpers;
mod hostile;
mod leftovers;
mod messages;
#[cfg(feature = "otel")]
mod otel;
mod partitions;
mod rerun_from;
mod routes;
mod runs;
mod store_suite;
mod topology;
mod trust;
mod watch;
