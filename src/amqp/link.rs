//! A supervised link to RabbitMQ. The supervisor (see `app`) opens a [`Session`] — connection,
//! topology, confirming publisher — installs it here, and replaces it after the connection drops.
//! Publishers ask the link for the current session instead of holding a channel themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

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

impl Session {
    /// Connects to `url`, declares the topology and opens the publishing channel.
    pub async fn open(url: &str, names: &Names, generation: u64) -> Result<Self, lapin::Error> {
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
