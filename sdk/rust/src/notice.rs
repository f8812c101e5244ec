//! What a worker reports about itself. The crate logs nothing on its own: [`Worker::on_notice`]
//! hands each notice to the program (to its logger, a counter, a test), and without one the
//! warnings go to stderr.
//!
//! [`Worker::on_notice`]: crate::Worker::on_notice

use std::fmt;
use std::time::Duration;

/// Something a worker did or met.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Connected, queues declared, consuming `queue` and listening for aborts.
    Consuming { worker_id: String, queue: String },
    /// The connection (or a channel of it) was lost, or could not be set up; reconnecting after
    /// `retry_in`.
    Disconnected {
        worker_id: String,
        error: String,
        retry_in: Duration,
    },
    /// A delivery that is not a stage-dispatch was rejected (not requeued).
    MalformedDispatch { worker_id: String, error: String },
    /// A dispatch of a job run already aborted was acked without running.
    SkippedAborted { task_id: String, job_id: String },
    /// The running task's job was aborted: its handler was stopped, the dispatch acked, and no
    /// result sent.
    Cancelled { task_id: String, job_id: String },
    /// The handler's outputs could not be sent; an error result says why.
    UnsendableOutputs { task_id: String, reason: String },
    /// The result could not be published; the dispatch went back to the queue.
    NotPublished { task_id: String, error: String },
    /// The worker stopped while the task was still running after the grace period; the
    /// dispatch went back to the queue for another worker.
    HandedBack { task_id: String },
}

impl Notice {
    /// Whether something went wrong (what is printed when no observer is set).
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Notice::Disconnected { .. }
                | Notice::MalformedDispatch { .. }
                | Notice::UnsendableOutputs { .. }
                | Notice::NotPublished { .. }
        )
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Consuming { worker_id, queue } => {
                write!(f, "worker {worker_id} consuming {queue}")
            }
            Notice::Disconnected {
                worker_id,
                error,
                retry_in,
            } => write!(
                f,
                "worker {worker_id} lost its connection ({error}); reconnecting in {:.1} s",
                retry_in.as_secs_f64()
            ),
            Notice::MalformedDispatch { worker_id, error } => {
                write!(
                    f,
                    "worker {worker_id} dropped a malformed dispatch: {error}"
                )
            }
            Notice::SkippedAborted { task_id, job_id } => {
                write!(f, "task {task_id} belongs to aborted job {job_id}; skipped")
            }
            Notice::Cancelled { task_id, job_id } => {
                write!(f, "task {task_id} stopped: job {job_id} was aborted")
            }
            Notice::UnsendableOutputs { task_id, reason } => {
                write!(f, "task {task_id}: {reason}")
            }
            Notice::NotPublished { task_id, error } => write!(
                f,
                "task {task_id}: result not published ({error}); the dispatch goes back to the queue"
            ),
            Notice::HandedBack { task_id } => write!(
                f,
                "task {task_id} still running at shutdown; the dispatch goes back to the queue"
            ),
        }
    }
}

/// What receives notices.
pub(crate) type Observer = std::sync::Arc<dyn Fn(&Notice) + Send + Sync>;

/// Prints warnings to stderr.
pub(crate) fn print_warnings(notice: &Notice) {
    if notice.is_warning() {
        eprintln!("job-manager-worker: {notice}");
    }
}
