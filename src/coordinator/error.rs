//! What handling an event or starting a job came to, and why it could fail.

use std::sync::Arc;
use std::time::Instant;

use crate::domain::{Ignored, Job, JobId};
use crate::ports::{BrokerError, StoreError};

/// Why the coordinator could not finish handling an event. [`CoordinatorError::is_transient`]
/// tells whether a retry may help; the consumer and the sweep decide on it. Cheap to clone:
/// every event of a coalesced batch gets the batch's error, with its retry decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publish failed: {0}")]
    Broker(#[from] BrokerError),
    #[error("gave up after {0} lost compare-and-set races")]
    Contention(u32),
}

impl CoordinatorError {
    /// Whether a retry may succeed: the store or the broker was unavailable, or other writers
    /// won the race. A permanent error (a value the store cannot encode or refuses, a message
    /// that cannot be encoded) fails the same way on every retry.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(error) => error.is_transient(),
            Self::Broker(error) => error.is_transient(),
            Self::Contention(_) => true,
        }
    }
}

/// What handling an event came to.
#[derive(Debug)]
pub enum Handled {
    /// The job changed and the effects were carried out.
    Applied {
        job: Arc<Job>,
        /// When the broker confirmed the tasks this event caused to be published, if any.
        dispatched: Option<Instant>,
    },
    /// Nothing changed.
    Ignored(Ignored),
    /// No active job has this id.
    UnknownJob,
}

/// What starting a job came to.
#[derive(Debug)]
pub enum Created {
    Started(JobId),
    AlreadyActive(JobId),
    UnknownMachine,
    UnknownPipeline(String),
    /// A rerun from a stage cannot start: why, and the request field at fault.
    CannotRerun(crate::domain::rerun::RerunRefused),
}
