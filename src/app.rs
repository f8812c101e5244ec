//! Wires the store, the broker, the coordinator, the consumer, the sweep and the API together.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::amqp::broker::RabbitBroker;
use crate::amqp::{Link, Names, Session, consumer};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::http::{self, AppState};
use crate::intake::Intake;
use crate::ports::JobStore;
use crate::services::{Catalog, Queries, Results};
use crate::store::Store;
use crate::sweep;

/// How long shutdown waits for in-flight work before it gives up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Longest pause between attempts to reach MongoDB or RabbitMQ.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Retries `connect` with backoff until it succeeds; `None` if `shutdown` fires first.
async fn with_backoff<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut connect: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), MAX_BACKOFF);
    loop {
        let delay = backoff.pause();
        tokio::select! {
            result = connect() => match result {
                Ok(value) => return Some(value),
                Err(error) => warn!(%error, retry_in_ms = delay.as_millis() as u64, "{what} not reachable"),
            },
            _ = shutdown.cancelled() => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Runs the API on `listener`, and the result consumer and the sweep, until `shutdown` fires;
/// then stops taking work, drains what is in flight and closes connections.
///
/// Neither MongoDB nor RabbitMQ has to be up for it to start: the API answers at once (readiness
/// reports what is missing), and the broker link connects, and reconnects, with backoff.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let base_path =
        crate::config::parse_base_path(&config.base_path).map_err(anyhow::Error::msg)?;
    check_amqp_url(&config.endpoints.amqp_url)?;
    let tokens = config.tokens().map_err(anyhow::Error::msg)?;
    crate::meter::install();
    if !tokens.is_empty() {
        info!("api access control is on");
    }
    let store = Store::connect(&config.endpoints.mongodb_uri, &config.database)
        .await
        .context("invalid MongoDB URI")?;
    let (coordinator, background) = Background::start(&config, store.clone(), &shutdown);
    let writers = coordinator.clone();
    let limits = http::limits::Limits::new(config.max_requests as usize, config.request_timeout());
    let queries = Queries::new(store.clone());
    let state = AppState {
        results: Results::new(coordinator.clone(), queries.clone()),
        coordinator,
        catalog: Catalog::new(store.clone()),
        queries,
        watchers: http::watch::Watchers::new(
            shutdown.clone(),
            config.request_timeout(),
            config.max_requests as usize,
        ),
    };
    let app = http::router(state, &base_path, tokens, limits);
    info!(address = %listener.local_addr()?, base_path = %base_path, "serving");
    let timeout = config.request_timeout();
    http::serve::serve(listener, app, timeout, shutdown.clone(), SHUTDOWN_GRACE).await;
    shutdown.cancel();
    let drained = background.drain(&writers).await;
    store.shutdown().await;
    drained?;
    info!("stopped");
    Ok(())
}

/// The work beside the API: the indexes ensured once, the result consumer on a supervised
/// broker session, and the sweep.
struct Background {
    indexes: JoinHandle<()>,
    consuming: JoinHandle<anyhow::Result<()>>,
    sweeper: JoinHandle<()>,
}

impl Background {
    /// Wires the coordinator over `store` and a RabbitMQ broker, and starts the work.
    fn start(config: &Config, store: Store, shutdown: &CancellationToken) -> (Coordinator, Self) {
        let broker = RabbitBroker::new(Link::new(), Names::new(config.prefix.clone()));
        let jobs: Arc<dyn JobStore> = Arc::new(store.clone());
        let coordinator = Coordinator::new(jobs.clone(), Arc::new(broker.clone()));
        let intake = Arc::new(Intake::new(coordinator.clone(), jobs.clone()));
        let indexes = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let ensured = with_backoff("mongodb", &shutdown, || store.ensure_indexes()).await;
                if ensured.is_some() {
                    info!("mongodb indexes ensured");
                }
            }
        });
        let consuming = supervise(config.clone(), broker, intake, shutdown.clone());
        let (interval, grace) = (config.sweep_interval(), config.dispatch_grace());
        let sweeping = sweep::run(coordinator.clone(), jobs, interval, grace, shutdown.clone());
        let background = Self {
            indexes,
            consuming: tokio::spawn(consuming),
            sweeper: tokio::spawn(sweeping),
        };
        (coordinator, background)
    }

    /// Waits, at most [`SHUTDOWN_GRACE`], for the work to finish what it holds, then for the
    /// outbox marks and job events handed to the background writers.
    async fn drain(self, coordinator: &Coordinator) -> anyhow::Result<()> {
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            let consumed = self.consuming.await;
            let _ = self.sweeper.await;
            let _ = self.indexes.await;
            coordinator.flush().await;
            consumed
        })
        .await;
        match drained {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(error).context("result consumer failed"),
            Ok(Err(join)) => return Err(join).context("result consumer panicked"),
            Err(_) => warn!("in-flight work did not drain within the shutdown grace"),
        }
        Ok(())
    }
}

/// Refuses an AMQP URL that cannot parse, with the password masked: the broker client's own
/// message quotes the whole URL, and it would be logged on every reconnection attempt.
fn check_amqp_url(url: &str) -> anyhow::Result<()> {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(_) => Ok(()),
        Err(error) => {
            let redacted = crate::config::redact_url(url);
            anyhow::bail!(
                "invalid AMQP URL {redacted}: {}",
                error.replace(url, &redacted)
            )
        }
    }
}

/// Keeps a session with RabbitMQ and a result consumer on it, reconnecting (and declaring the
/// topology again) whenever the connection or the publishing channel is lost.
async fn supervise(
    config: Config,
    broker: RabbitBroker,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let link = broker.link().clone();
    let names = broker.names().clone();
    loop {
        let generation = link.next_generation();
        let Some(session) = with_backoff("rabbitmq", &shutdown, || {
            Session::open(&config.endpoints.amqp_url, &names, generation)
        })
        .await
        else {
            return Ok(());
        };
        link.install(session.clone());
        broker.forget_declared_queues();
        if generation > 1 {
            let reconnects = link.reconnects();
            info!(generation, reconnects, "reconnected to rabbitmq");
        } else {
            info!("connected to rabbitmq");
        }
        let queues = consumer::Queues {
            shared: names.results_queue(),
            partitions: names.result_partitions(),
        };
        let consumed = consume(&session, queues, intake.clone(), config.prefetch, &shutdown).await;
        link.clear();
        if session.connection.status().connected() {
            let _ = session.connection.close(200, "closing".into()).await;
        }
        if shutdown.is_cancelled() {
            return consumed;
        }
        match consumed {
            Ok(()) => warn!("the result consumer ended; reconnecting"),
            Err(error) => warn!(error = %error, "lost the rabbitmq session; reconnecting"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Consumes the results queues on `session` until shutdown, or until the session closes.
async fn consume(
    session: &Session,
    queues: consumer::Queues,
    intake: Arc<Intake>,
    prefetch: u16,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = session.connection.create_channel().await?;
    let consumer = consumer::run(channel, queues, intake, prefetch, shutdown.clone());
    let watchdog = async {
        while session.is_open() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        result = consumer => result.map_err(anyhow::Error::from),
        _ = watchdog => Err(anyhow::anyhow!("the connection or the publishing channel closed")),
    }
}

/// A token cancelled on ctrl-c or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        info!("shutdown requested");
        trigger.cancel();
    });
    token
}
