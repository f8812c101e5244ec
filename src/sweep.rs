//! The periodic sweep: safe on every replica, since every change it makes goes through the
//! per-job compare-and-set (or, for a re-publish, is harmless when repeated).
//!
//! It starts pending jobs whose start was interrupted, re-publishes dispatches that were recorded
//! but never confirmed, times out overdue tasks, and finishes interrupted moves to history.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::coordinator::{Coordinator, CoordinatorError};
use crate::domain::{Event, Job, JobId, JobStatus, StageId, TaskId, TaskStatus, Timestamp};
use crate::meter;
use crate::ports::{Found, JobStore};

/// Most jobs one sweep looks at; the next sweep takes the rest.
const BATCH: i64 = 500;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Actions taken: archives finished, jobs started, timeouts handled, dispatches re-published.
    pub actions: usize,
    /// Jobs whose handling failed; each was logged, counted and skipped.
    pub failed: usize,
}

impl Swept {
    /// Counts the outcome of one job's handling; a failure is logged and counted, never
    /// returned, so one job cannot stop the sweep of the others.
    fn note(&mut self, job_id: &JobId, what: &str, outcome: Result<usize, CoordinatorError>) {
        match outcome {
            Ok(actions) => self.actions += actions,
            Err(error) => {
                self.failed += 1;
                meter::sweep_error();
                warn!(job_id = %job_id, %error, "sweep could not {what}; skipped until the next sweep");
            }
        }
    }
}

/// Where the next sweep goes on from: the last job id a full batch reached, for the jobs to
/// attend to and for the interrupted archives, so jobs that fail every time cannot keep the
/// same batch full and hide the rest. `None` starts from the first.
#[derive(Debug, Default, Clone)]
pub struct Resume {
    attention: Option<String>,
    archives: Option<String>,
}

/// The cursor for the next batch: after the last id read if the batch was full, else from the
/// start.
fn next_from(found: &Found) -> Option<String> {
    (found.read as i64 >= BATCH)
        .then(|| found.last.clone())
        .flatten()
}

/// Runs one sweep at `now` over the jobs of `store` after `resume`, handling them through
/// `coordinator`, and moves `resume` on. Only listing the jobs to look at can fail it as a
/// whole.
pub async fn sweep_once(
    coordinator: &Coordinator,
    store: &dyn JobStore,
    now: Timestamp,
    grace: Duration,
    resume: &mut Resume,
) -> Result<Swept, CoordinatorError> {
    let mut swept = Swept::default();
    let ended = store.ended_jobs(resume.archives.as_deref(), BATCH).await?;
    resume.archives = next_from(&ended);
    for job in ended.jobs {
        info!(job_id = %job.id, "finishing an interrupted move to history");
        let archived = store.archive(&job).await.map(|()| 1).map_err(Into::into);
        swept.note(&job.id, "finish a move to history", archived);
    }
    let cutoff =
        Timestamp::from(now.as_datetime() - chrono::TimeDelta::from_std(grace).unwrap_or_default());
    let found = store
        .jobs_needing_attention(now, cutoff, resume.attention.as_deref(), BATCH)
        .await?;
    resume.attention = next_from(&found);
    for job in found.jobs {
        let outcome = attend(coordinator, store, &job, now, cutoff).await;
        swept.note(&job.id, "attend to the job", outcome);
    }
    Ok(swept)
}

/// Starts a pending job, or times out its overdue tasks and re-publishes its unconfirmed
/// dispatches. Returns how many actions it took.
async fn attend(
    coordinator: &Coordinator,
    store: &dyn JobStore,
    job: &Job,
    now: Timestamp,
    cutoff: Timestamp,
) -> Result<usize, CoordinatorError> {
    if job.status == JobStatus::Pending {
        info!(job_id = %job.id, "starting a job whose start was interrupted");
        coordinator.handle(&job.id, Event::Start).await?;
        return Ok(1);
    }
    let Some(stage) = job.current_stage.as_ref() else {
        return Ok(0);
    };
    let mut actions = 0;
    let mut unconfirmed = Vec::new();
    for task in stage
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Pending)
    {
        if task.deadline < now {
            warn!(job_id = %job.id, task_id = %task.task_id, stage_id = %stage.id, attempt = task.attempt, "task timed out");
            let task_id = task.task_id.clone();
            coordinator
                .handle(&job.id, Event::Timeout { task_id })
                .await?;
            actions += 1;
        } else if task.dispatched.is_none() && task.issued < cutoff {
            unconfirmed.push(task.task_id.clone());
        }
    }
    if !unconfirmed.is_empty() {
        info!(job_id = %job.id, stage_id = %stage.id, tasks = unconfirmed.len(), "re-publishing unconfirmed dispatches");
        // Reload so a timeout handled above is not undone by publishing a stale attempt.
        // Only what is still pending and unmarked: a result or a mark may have come since.
        if let Some(fresh) = store.load_job(&job.id).await?
            && let Some(still) = still_unconfirmed(&fresh, &stage.id, &unconfirmed)
        {
            coordinator.dispatch(&fresh, &stage.id, &still).await?;
            actions += 1;
        }
    }
    Ok(actions)
}

/// Which of `task_ids` are, in `job`, pending attempts of stage `stage_id` without a mark;
/// `None` when none are.
fn still_unconfirmed(job: &Job, stage_id: &StageId, task_ids: &[TaskId]) -> Option<Vec<TaskId>> {
    let stage = job.current_stage.as_ref().filter(|s| &s.id == stage_id)?;
    let still: Vec<TaskId> = stage
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Pending && t.dispatched.is_none())
        .filter(|t| task_ids.contains(&t.task_id))
        .map(|t| t.task_id.clone())
        .collect();
    (!still.is_empty()).then_some(still)
}

/// Sweeps every `interval` until `shutdown`.
pub async fn run(
    coordinator: Coordinator,
    store: Arc<dyn JobStore>,
    interval: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    let mut resume = Resume::default();
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                if let Err(error) = coordinator.sync_clock().await {
                    debug!(%error, "could not read the database's clock; keeping the last offset");
                }
                match sweep_once(&coordinator, store.as_ref(), coordinator.now(), grace, &mut resume).await {
                    Ok(Swept { actions: 0, failed: 0 }) => {}
                    Ok(Swept { actions, failed }) => debug!(actions, failed, "sweep done"),
                    Err(error) => warn!(%error, "sweep failed; will retry"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fakes::{MemoryBroker, MemoryStore, Op, new_sample_job, sample_job};
    use crate::ports::StoreError;

    const GRACE: Duration = Duration::from_secs(30);

    /// A coordinator whose clock reads `ahead` seconds past now, over empty fakes.
    fn setup_at(ahead: i64) -> (Coordinator, MemoryStore, MemoryBroker) {
        let (store, broker) = (MemoryStore::new(), MemoryBroker::new());
        let clock = crate::clock::Clock::with_local(Arc::new(move || {
            chrono::Utc::now() + chrono::TimeDelta::seconds(ahead)
        }));
        let coordinator =
            Coordinator::new(Arc::new(store.clone()), Arc::new(broker.clone())).with_clock(clock);
        (coordinator, store, broker)
    }

    fn setup() -> (Coordinator, MemoryStore, MemoryBroker) {
        setup_at(0)
    }

    fn later(seconds: i64) -> Timestamp {
        Timestamp::from(chrono::Utc::now() + chrono::TimeDelta::seconds(seconds))
    }

    async fn sweep(coordinator: &Coordinator, store: &MemoryStore, now: Timestamp) -> Swept {
        let mut resume = Resume::default();
        sweep_once(coordinator, store, now, GRACE, &mut resume)
            .await
            .expect("listed")
    }

    #[tokio::test]
    async fn a_job_whose_start_was_interrupted_is_started_after_the_grace() {
        let (coordinator, store, broker) = setup();
        let job = new_sample_job("pending", Timestamp::from(chrono::Utc::now()));
        let id = job.id.clone();
        store.put_job(job);
        assert_eq!(
            sweep(&coordinator, &store, later(1)).await,
            Swept::default()
        );
        let swept = sweep(&coordinator, &store, later(60)).await;
        assert_eq!((swept.actions, swept.failed), (1, 0));
        assert_eq!(store.job(&id).map(|j| j.status), Some(JobStatus::Running));
        assert_eq!(broker.dispatches().len(), 1);
    }

    #[tokio::test]
    async fn an_overdue_task_times_out_and_is_dispatched_again() {
        let (coordinator, store, broker) = setup_at(3600);
        let job = sample_job("overdue", 1);
        let id = job.id.clone();
        store.put_job(job);
        let swept = sweep(&coordinator, &store, later(3600)).await;
        assert_eq!((swept.actions, swept.failed), (1, 0));
        let sent = broker.dispatches();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.attempt, 2);
        let job = store.job(&id).expect("still running");
        assert_eq!(job.current_stage.expect("in flight").tasks[0].attempt, 2);
    }

    #[test]
    fn only_pending_unmarked_attempts_are_published_again() {
        let mut job = sample_job("relay", 3);
        let stage = job.current_stage.as_mut().expect("in flight");
        let ids: Vec<TaskId> = stage.tasks.iter().map(|t| t.task_id.clone()).collect();
        stage.tasks[0].status = TaskStatus::Done;
        stage.tasks[1].dispatched = Some(later(0));
        let stage_id = stage.id.clone();
        assert_eq!(
            still_unconfirmed(&job, &stage_id, &ids),
            Some(vec![ids[2].clone()])
        );
        assert_eq!(still_unconfirmed(&job, &stage_id, &ids[..2]), None);
        let other = crate::domain::StageId::for_index(5);
        assert_eq!(still_unconfirmed(&job, &other, &ids), None);
    }

    #[tokio::test]
    async fn an_interrupted_move_to_history_is_finished() {
        let (coordinator, store, _) = setup();
        let mut job = sample_job("ended", 1);
        job.status = JobStatus::Aborted;
        let id = job.id.clone();
        store.put_job(job);
        let swept = sweep(&coordinator, &store, later(0)).await;
        assert_eq!((swept.actions, swept.failed), (1, 0));
        assert!(store.job(&id).is_none());
        let record = store.load_history(&id).await.expect("read");
        assert_eq!(record.map(|r| r.job.status), Some(JobStatus::Aborted));
    }

    #[tokio::test]
    async fn a_job_that_fails_is_counted_and_the_others_are_still_swept() {
        let (coordinator, store, broker) = setup_at(3600);
        for hash in ["a-first", "b-second"] {
            store.put_job(sample_job(hash, 1));
        }
        store.fail_next(Op::Load, StoreError::Unavailable("a blip".into()));
        let swept = sweep(&coordinator, &store, later(3600)).await;
        assert_eq!((swept.actions, swept.failed), (1, 1));
        assert_eq!(broker.dispatches().len(), 1);
    }

    #[tokio::test]
    async fn jobs_that_fail_every_time_cannot_hide_the_rest() {
        let (coordinator, store, _) = setup();
        let ended = |n: usize| {
            let mut job = sample_job(&format!("e{n:04}"), 0);
            job.status = JobStatus::Failed;
            job
        };
        for n in 0..=BATCH as usize {
            store.put_job(ended(n));
        }
        for _ in 0..BATCH {
            store.fail_next(Op::Archive, StoreError::Unavailable("stuck".into()));
        }
        let mut resume = Resume::default();
        let first = sweep_once(&coordinator, &store, later(0), GRACE, &mut resume).await;
        assert_eq!(first.expect("listed").failed, BATCH as usize);
        let second = sweep_once(&coordinator, &store, later(0), GRACE, &mut resume).await;
        assert_eq!(second.expect("listed").actions, 1, "the one past the batch");
        let left = store.ended_jobs(None, 2 * BATCH).await.expect("listed");
        assert_eq!(left.read, BATCH as usize, "one moved to history");
    }
}
