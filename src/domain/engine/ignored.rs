//! Why an event changed nothing (docs/semantics.md, "Events that change nothing").

use crate::domain::JobStatus;

/// Why an event changed nothing. All are normal under at-least-once delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// The job already ended (or has not started, for a result).
    JobNotActive(JobStatus),
    /// The task already has its result.
    Duplicate,
    /// No task with this id was issued for this job.
    UnknownTask,
    /// An error or timeout for an attempt that has been superseded.
    StaleAttempt,
    /// The job was started already.
    AlreadyStarted,
    /// The result belongs to another run of the job (an earlier run of the same file).
    OtherRun,
    /// The job is already in the status asked for (pause or resume).
    AlreadyInStatus(JobStatus),
    /// Outputs posted to skip a task that has not failed.
    NotFailed,
}

impl Ignored {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::JobNotActive(_) => "job not active",
            Self::Duplicate => "duplicate result",
            Self::UnknownTask => "unknown task",
            Self::StaleAttempt => "stale attempt",
            Self::AlreadyStarted => "already started",
            Self::OtherRun => "result of another run",
            Self::AlreadyInStatus(_) => "already in that status",
            Self::NotFailed => "the task has not failed",
        }
    }
}
