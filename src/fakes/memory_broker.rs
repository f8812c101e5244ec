//! The broker in memory: it keeps what was published, and can refuse.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::messages::{JobCleanup, JobEvent, StageDispatch};
use crate::ports::{Announced, Broker, BrokerError, EventBody};

#[derive(Default)]
struct State {
    /// Every confirmed dispatch, with the worker queue it went to.
    dispatches: Vec<(String, StageDispatch)>,
    /// Every confirmed job event, with its routing key.
    events: Vec<(String, JobEvent)>,
    cleanups: Vec<JobCleanup>,
    /// Errors the next dispatches fail with, one each.
    failures: VecDeque<BrokerError>,
}

/// The broker in memory. Cheap to clone; clones share what was published.
#[derive(Clone)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    connected: Arc<AtomicBool>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            connected: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next dispatch fail with `error`, publishing none of its messages.
    pub fn fail_next_dispatch(&self, error: BrokerError) {
        self.lock().failures.push_back(error);
    }

    /// Every dispatch published so far, with its worker id.
    pub fn dispatches(&self) -> Vec<(String, StageDispatch)> {
        self.lock().dispatches.clone()
    }

    /// The routing keys of the job events published so far, in order.
    pub fn event_keys(&self) -> Vec<String> {
        self.lock()
            .events
            .iter()
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The cleanup events published so far, in order.
    pub fn cleanups(&self) -> Vec<JobCleanup> {
        self.lock().cleanups.clone()
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

impl Broker for MemoryBroker {
    fn dispatch<'a>(
        &'a self,
        worker_id: &'a str,
        dispatches: &'a [StageDispatch],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut state = self.lock();
        let result = match state.failures.pop_front() {
            Some(error) => Err(error),
            None if !self.is_connected() => Err(BrokerError::Unavailable("not connected".into())),
            None => {
                let sent = dispatches.iter().map(|d| (worker_id.to_owned(), d.clone()));
                state.dispatches.extend(sent);
                Ok(())
            }
        };
        async move { result }.boxed()
    }

    fn notify<'a>(&'a self, events: &'a [Announced]) -> BoxFuture<'a, Result<(), BrokerError>> {
        let result = if self.is_connected() {
            let mut state = self.lock();
            for announced in events {
                match &announced.event {
                    EventBody::Job(event) => {
                        let key = announced.routing_key.clone();
                        state.events.push((key, event.clone()));
                    }
                    EventBody::Cleanup(cleanup) => state.cleanups.push(cleanup.clone()),
                }
            }
            Ok(())
        } else {
            Err(BrokerError::Unavailable("not connected".into()))
        };
        async move { result }.boxed()
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}
