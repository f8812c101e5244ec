//! A supervised link to RabbitMQ. The supervisor (see `app`) opens a [`Session`] — connection,
//! topology, confirming publisher — installs it here, and replaces it after the connection drops.
//! Publishers ask the link for the current session instead of holding a channel themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lapin::Connection;

use super::{Names, Publisher, topology};

/// One connection with its topology declared and a confirming publisher open.
#[derive(Clone)]
pub struct Session {
    pub connection: Arc<Connection>,
    pub publisher: Publisher,
    /// Counts sessions, so a stale one can be told from the current one.
    pub generation: u64,
}

/// Longest a session may take to open. The AMQP handshake has no timeout of its own: over a
/// connection that is accepted and then stays silent (a stalled network, a half-open socket, a
/// proxy whose broker is gone) it waits for ever, and the supervisor, which reconnects only
/// when an open returns, waits with it. Heartbeats start only after the handshake.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

impl Session {
    /// Connects to `url`, declares the topology and opens the publishing channel; gives up after
    /// [`OPEN_TIMEOUT`].
    pub async fn open(url: &str, names: &Names, generation: u64) -> Result<Self, lapin::Error> {
        Self::open_within(url, names, generation, OPEN_TIMEOUT).await
    }

    /// [`Session::open`], giving up after `limit`.
    pub async fn open_within(
        url: &str,
        names: &Names,
        generation: u64,
        limit: Duration,
    ) -> Result<Self, lapin::Error> {
        match tokio::time::timeout(limit, Self::connect(url, names, generation)).await {
            Ok(opened) => opened,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no session with the broker within {} ms", limit.as_millis()),
            )
            .into()),
        }
    }

    async fn connect(url: &str, names: &Names, generation: u64) -> Result<Self, lapin::Error> {
        let connection = super::connect(url, "job-manager").await?;
        topology::declare(&connection, names).await?;
        let publisher = Publisher::open(&connection).await?;
        Ok(Self {
            connection: Arc::new(connection),
            publisher,
            generation,
        })
    }

    pub fn is_open(&self) -> bool {
        self.connection.status().connected() && self.publisher.channel().status().connected()
    }
}

#[derive(Default)]
struct Inner {
    /// Std lock: only ever held to clone or swap, never across `.await`.
    current: RwLock<Option<Session>>,
    generation: AtomicU64,
    reconnects: AtomicU64,
}

/// Shared handle to the current session. Cheap to clone.
#[derive(Clone, Default)]
pub struct Link {
    inner: Arc<Inner>,
}

impl Link {
    pub fn new() -> Self {
        Self::default()
    }

    /// The session in use, if connected.
    pub fn current(&self) -> Option<Session> {
        self.inner
            .current
            .read()
            .ok()
            .and_then(|guard| guard.clone())
            .filter(Session::is_open)
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// How many times the link has reconnected after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// The number the next session should carry.
    pub fn next_generation(&self) -> u64 {
        self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Makes `session` the current one; counts a reconnect if it replaces an earlier one.
    pub fn install(&self, session: Session) {
        if session.generation > 1 {
            self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
            crate::meter::amqp_reconnect();
        }
        if let Ok(mut guard) = self.inner.current.write() {
            *guard = Some(session);
        }
    }

    /// Forgets the current session (it is broken or shutting down).
    pub fn clear(&self) {
        if let Ok(mut guard) = self.inner.current.write() {
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opening_a_session_over_a_silent_connection_gives_up() {
        // A peer that accepts and never says a word, as a stalled network looks from here.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        let names = Names::new("link-test");
        let limit = Duration::from_millis(300);
        let opened = tokio::time::timeout(
            Duration::from_secs(5),
            Session::open_within(&url, &names, 1, limit),
        )
        .await;
        let Ok(Err(error)) = opened else {
            panic!("the open did not give up by itself");
        };
        assert!(error.to_string().contains("within 300 ms"), "{error}");
    }
}
