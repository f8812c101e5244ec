//! [`Worker`]: the handler and its settings, and the loops that serve it.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use serde::Serialize;

use crate::backoff::Backoff;
use crate::connect::connect;
use crate::encode::Outcome;
use crate::flag::Flag;
use crate::notice::{Notice, Observer, print_warnings};
use crate::session::{self, SessionError};
use crate::task::Task;

/// The prefix when `JOB_MANAGER_PREFIX` is not set.
pub const DEFAULT_PREFIX: &str = "job-manager";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A handler with its output type erased: the outputs already turned into JSON.
pub(crate) type Handler = Arc<dyn Fn(Task) -> BoxFuture<Outcome> + Send + Sync>;

/// How a worker behaves; see the setters of [`Worker`].
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) worker_id: String,
    pub(crate) prefix: String,
    pub(crate) prefetch: u16,
    pub(crate) first_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) grace: Duration,
    pub(crate) observer: Observer,
}

impl Settings {
    pub(crate) fn notify(&self, notice: Notice) {
        (self.observer)(&notice)
    }
}

/// A worker: consumes `P.worker.<worker_id>`, runs the handler for each stage-dispatch, and
/// publishes the stage-result to the dispatch's `reply_to`.
///
/// The handler gets a [`Task`] and returns the outputs (anything `Serialize` that gives an
/// object, a list of objects and `null`s, or `null`) or an error (anything `Display`). An
/// error, a panic, or outputs that cannot be sent become an `error` result, which the
/// coordinator retries up to the stage's `max_attempts`. The result echoes the dispatch's
/// `task_id`, `job_id` and `run_id`, and is published with a publisher confirm before the
/// dispatch is acked. When the task's job is aborted (`job.aborted` on `P.events`) the handler's
/// future is dropped, the dispatch acked and no result sent; later dispatches of that run are
/// skipped.
#[derive(Clone)]
pub struct Worker {
    pub(crate) settings: Arc<Settings>,
    pub(crate) handler: Handler,
}

impl Worker {
    /// A worker for `worker_id` (1–100 of `A-Z a-z 0-9 - _ .`), with the prefix from
    /// `JOB_MANAGER_PREFIX` (default `job-manager`), prefetch 1, reconnects after 0.2 s doubling
    /// up to 5 s, and 10 s of grace at shutdown.
    pub fn new<H, Fut, O, E>(worker_id: impl Into<String>, handler: H) -> Self
    where
        H: Fn(Task) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        O: Serialize,
        E: Display,
    {
        let handler: Handler = Arc::new(move |task| {
            let running = handler(task);
            Box::pin(async move {
                match running.await {
                    Ok(outputs) => match serde_json::to_value(outputs) {
                        Ok(outputs) => Outcome::Outputs(outputs),
                        Err(error) => {
                            Outcome::Unsendable(format!("outputs cannot be sent as JSON: {error}"))
                        }
                    },
                    // `{:#}`: the whole chain of an error type that has one (anyhow's).
                    Err(error) => Outcome::Failed(format!("{error:#}")),
                }
            })
        });
        Self {
            settings: Arc::new(Settings {
                worker_id: worker_id.into(),
                prefix: std::env::var("JOB_MANAGER_PREFIX")
                    .unwrap_or_else(|_| DEFAULT_PREFIX.to_owned()),
                prefetch: 1,
                first_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                grace: Duration::from_secs(10),
                observer: Arc::new(print_warnings),
            }),
            handler,
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// The prefix `P` of every queue and exchange name.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings_mut().prefix = prefix.into();
        self
    }

    /// Dispatches held unacked at once, which is also how many tasks run at once (at least 1).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.settings_mut().prefetch = prefetch.max(1);
        self
    }

    /// The longest pause between reconnects (the first is 0.2 s, then doubling).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.settings_mut().max_backoff = max;
        self
    }

    /// How long tasks still running at shutdown may take to finish; those still running then
    /// are stopped and their dispatches go back to the queue.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings_mut().grace = grace;
        self
    }

    /// Hands every [`Notice`] to `observer` instead of printing the warnings to stderr.
    pub fn on_notice(mut self, observer: impl Fn(&Notice) + Send + Sync + 'static) -> Self {
        self.settings_mut().observer = Arc::new(observer);
        self
    }

    pub fn worker_id(&self) -> &str {
        &self.settings.worker_id
    }

    /// `P.worker.<worker_id>`.
    pub fn queue(&self) -> String {
        format!(
            "{}.worker.{}",
            self.settings.prefix, self.settings.worker_id
        )
    }

    pub(crate) fn notify(&self, notice: Notice) {
        self.settings.notify(notice)
    }

    /// Serves until `shutdown` completes, on a connection of its own to `url`, reconnecting
    /// with capped exponential backoff whenever the connection is lost or cannot be set up.
    pub async fn serve(&self, url: &str, shutdown: impl Future<Output = ()> + Send) {
        let stop = Flag::default();
        let serving = self.serve_until(url, &stop);
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            _ = &mut serving => return,
            _ = shutdown => stop.set(),
        }
        serving.await
    }

    async fn serve_until(&self, url: &str, stop: &Flag) {
        let settings = &self.settings;
        let mut backoff = Backoff::new(settings.first_backoff, settings.max_backoff);
        let name = format!("job-manager-worker {}", settings.worker_id);
        while !stop.is_set() {
            let connected = tokio::select! {
                connected = connect(url, &name) => connected,
                _ = stop.wait() => return,
            };
            let error = match connected {
                Ok(connection) => {
                    let ended = session::run(self, &connection, stop).await;
                    let closing = connection.close(200, "worker stopping".into());
                    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
                    match ended {
                        Ok(()) => return,
                        Err(SessionError::Lost(error)) => {
                            // It worked until it was lost: start the pauses again.
                            backoff.reset();
                            error.to_string()
                        }
                        Err(SessionError::Setup(error)) => error.to_string(),
                    }
                }
                Err(error) => error.to_string(),
            };
            if stop.is_set() {
                return;
            }
            let retry_in = backoff.pause();
            self.notify(Notice::Disconnected {
                worker_id: settings.worker_id.clone(),
                error,
                retry_in,
            });
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = stop.wait() => return,
            }
        }
    }

    /// Serves one session on `connection` (which it does not close) until `shutdown` completes
    /// (`Ok`) or the connection fails (`Err`); no reconnecting. For a program that shares one
    /// connection between workers and reconnects itself.
    pub async fn run(
        &self,
        connection: &Connection,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), lapin::Error> {
        let stop = Flag::default();
        let running = session::run(self, connection, &stop);
        let mut running = std::pin::pin!(running);
        tokio::select! {
            ended = &mut running => return ended.map_err(SessionError::into_inner),
            _ = shutdown => stop.set(),
        }
        running.await.map_err(SessionError::into_inner)
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.settings.worker_id)
            .field("prefix", &self.settings.prefix)
            .field("prefetch", &self.settings.prefetch)
            .finish_non_exhaustive()
    }
}
