//! Results posted over HTTP, the seed's advance form (`POST /jobs/{job}` with
//! `{"<task_id>": <outputs>, …}`): each task id must have been issued for the job, a result of
//! an earlier run is acknowledged and ignored as over AMQP, and the rest are recorded by the
//! coordinator (docs/semantics.md, "Reruns and run ids"). Outputs posted for a task whose last
//! attempt failed in a stage that holds skip the task (docs/semantics.md, "Pause, resume and
//! hold").

use crate::coordinator::{Coordinator, CoordinatorError, Handled};
use crate::domain::{Event, Ignored, JobId, TaskId, TaskResult, TaskStatus};

use super::{Failure, HistoryRecord, Queries};

/// What recording a body of results came to: the last outcome other than `Recorded`, since
/// the answer is one per body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Every result changed the job.
    Recorded,
    /// A task already had its result.
    Duplicate,
    /// The job or the task no longer takes results; why.
    Ignored(String),
}

/// Why a body of results was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// A task id that no run of the job issued: the whole body is refused.
    #[error("task '{task_id}' was not issued for job '{job_id}'")]
    NotIssued { job_id: JobId, task_id: TaskId },
    /// Neither an active job nor a history record has this id.
    #[error("no job '{0}'")]
    UnknownJob(JobId),
    #[error(transparent)]
    Failed(#[from] Failure),
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
}

/// Records results posted for a job. Cheap to clone.
#[derive(Clone)]
pub struct Results {
    coordinator: Coordinator,
    queries: Queries,
}

impl Results {
    pub fn new(coordinator: Coordinator, queries: Queries) -> Self {
        Self {
            coordinator,
            queries,
        }
    }

    /// Records `results` for job `id`: all of them, or none if one names a task the job never
    /// issued.
    pub async fn record(
        &self,
        id: &JobId,
        results: Vec<TaskResult>,
    ) -> Result<Recorded, ResultsError> {
        let Some(job) = self.queries.job(id).await? else {
            // A result for an ended job is accepted and ignored, as over AMQP.
            return match self.queries.history(id).await? {
                Some(_) => Ok(Recorded::Ignored("job already ended".into())),
                None => Err(ResultsError::UnknownJob(id.clone())),
            };
        };
        let mut outcome = Recorded::Recorded;
        let mut current = Vec::with_capacity(results.len());
        let mut history = None;
        for mut result in results {
            if job.issued(&result.task_id) {
                // Pinned to the run checked here, should another run take its place meanwhile.
                result.run_id = Some(job.run_id.clone());
                current.push(result);
            } else if self
                .issued_earlier(id, &result.task_id, &mut history)
                .await?
            {
                outcome = Recorded::Ignored(Ignored::OtherRun.as_str().into());
            } else {
                let (job_id, task_id) = (id.clone(), result.task_id);
                return Err(ResultsError::NotIssued { job_id, task_id });
            }
        }
        for result in current {
            // Outputs posted for a task whose last attempt failed (a held stage) skip it.
            let failed = job
                .current_task(&result.task_id)
                .is_some_and(|t| t.status == TaskStatus::Failed);
            let event = match failed {
                true => Event::Skip(result),
                false => Event::Result(result),
            };
            match self.coordinator.handle(id, event).await? {
                Handled::Applied { .. } => {}
                Handled::Ignored(Ignored::Duplicate) => outcome = Recorded::Duplicate,
                Handled::Ignored(reason) => outcome = Recorded::Ignored(reason.as_str().into()),
                Handled::UnknownJob => outcome = Recorded::Ignored("job already ended".into()),
            }
        }
        Ok(outcome)
    }

    /// Whether an archived run of the job issued `task_id`. `history` holds the record once
    /// read, so a body naming many tasks reads it once.
    async fn issued_earlier(
        &self,
        id: &JobId,
        task_id: &TaskId,
        history: &mut Option<Option<HistoryRecord>>,
    ) -> Result<bool, Failure> {
        if history.is_none() {
            *history = Some(self.queries.history(id).await?);
        }
        Ok(history
            .as_ref()
            .is_some_and(|record| record.as_ref().is_some_and(|record| record.issued(task_id))))
    }
}
