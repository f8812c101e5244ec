//! Wires the store, the broker, the coordinator, the consumer, the sweep and the API together.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::amqp::{self, Names, Publisher, consumer, topology};
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::http::{self, AppState};
use crate::store::Store;
use crate::sweep;

/// How long shutdown waits for in-flight work before it gives up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Retries `connect` with backoff until it succeeds or `shutdown` fires.
async fn with_backoff<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut connect: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "{what} not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => anyhow::bail!("shut down while waiting for {what}"),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the API on `listener`, the result consumer and the sweep until `shutdown` fires, then
/// stops taking work, drains what is in flight and closes connections.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.mongodb_uri, &config.database)
        .await
        .context("invalid MongoDB URI")?;
    with_backoff("mongodb", &shutdown, || store.ensure_indexes()).await?;

    let names = Names::new(config.prefix.clone());
    let connection = Arc::new(
        with_backoff("rabbitmq", &shutdown, || {
            amqp::connect(&config.amqp_url, "job-manager")
        })
        .await?,
    );
    let setup = connection.create_channel().await?;
    topology::declare(&setup, &names)
        .await
        .context("declaring the topology")?;
    setup.close(200, "topology declared".into()).await?;
    let publisher = Publisher::open(&connection).await?;
    let coordinator = Coordinator::new(store, publisher, names);

    let consumer_channel = connection.create_channel().await?;
    let consumer_task = tokio::spawn({
        let coordinator = coordinator.clone();
        let shutdown = shutdown.clone();
        let prefetch = config.prefetch;
        async move {
            let result =
                consumer::run(consumer_channel, coordinator, prefetch, shutdown.clone()).await;
            if !shutdown.is_cancelled() {
                // Without a consumer this replica is of no use; stop so a supervisor restarts it.
                warn!(?result, "result consumer ended; shutting down");
                shutdown.cancel();
            }
            result
        }
    });
    let sweep_task = tokio::spawn(sweep::run(
        coordinator.clone(),
        config.sweep_interval(),
        config.dispatch_grace(),
        shutdown.clone(),
    ));

    let state = AppState {
        coordinator: coordinator.clone(),
        amqp: connection.clone(),
    };
    let app = http::router(state, &config.base_path);
    info!(address = %listener.local_addr()?, base_path = %config.base_path, "serving");
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let served = server.await;
    shutdown.cancel();

    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let consumed = consumer_task.await;
        let _ = sweep_task.await;
        consumed
    })
    .await;
    coordinator.close().await;
    if let Err(error) = connection.close(200, "shutdown".into()).await {
        warn!(%error, "closing the amqp connection failed");
    }
    served.context("http server failed")?;
    match drained {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => return Err(error).context("result consumer failed"),
        Ok(Err(join)) => return Err(join).context("result consumer panicked"),
        Err(_) => warn!("in-flight work did not drain within the shutdown grace"),
    }
    info!("stopped");
    Ok(())
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
