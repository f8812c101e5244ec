//! The periodic sweep: safe on every replica, since every change it makes goes through the
//! per-job compare-and-set (or, for a re-publish, is harmless when repeated).
//!
//! It starts pending jobs whose start was interrupted, re-publishes dispatches that were recorded
//! but never confirmed, times out overdue tasks, and finishes interrupted moves to history.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::coordinator::{Coordinator, CoordinatorError};
use crate::domain::{Event, JobStatus, TaskStatus, Timestamp};

/// Most jobs one sweep looks at; the next sweep takes the rest.
const BATCH: i64 = 500;

/// Runs one sweep at `now`. Returns how many actions it took.
pub async fn sweep_once(
    coordinator: &Coordinator,
    now: Timestamp,
    grace: Duration,
) -> Result<usize, CoordinatorError> {
    let store = coordinator.store();
    let mut actions = 0;
    for job in store.ended_jobs(BATCH).await? {
        info!(job_id = %job.id, "finishing an interrupted move to history");
        store.archive(&job).await?;
        actions += 1;
    }
    let cutoff =
        Timestamp::from(now.as_datetime() - chrono::TimeDelta::from_std(grace).unwrap_or_default());
    for job in store.jobs_needing_attention(now, cutoff, BATCH).await? {
        if job.status == JobStatus::Pending {
            info!(job_id = %job.id, "starting a job whose start was interrupted");
            coordinator.handle(&job.id, Event::Start).await?;
            actions += 1;
            continue;
        }
        let Some(stage) = job.current_stage.as_ref() else {
            continue;
        };
        let mut unconfirmed = Vec::new();
        for task in stage
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Pending)
        {
            if task.deadline < now {
                warn!(job_id = %job.id, task_id = %task.task_id, stage_id = %stage.id, attempt = task.attempt, "task timed out");
                coordinator
                    .handle(
                        &job.id,
                        Event::Timeout {
                            task_id: task.task_id.clone(),
                        },
                    )
                    .await?;
                actions += 1;
            } else if task.dispatched.is_none() && task.issued < cutoff {
                unconfirmed.push(task.task_id.clone());
            }
        }
        if !unconfirmed.is_empty() {
            info!(job_id = %job.id, stage_id = %stage.id, tasks = unconfirmed.len(), "re-publishing unconfirmed dispatches");
            // Reload so a timeout handled above is not undone by publishing a stale attempt.
            if let Some(fresh) = store.load_job(&job.id).await? {
                coordinator
                    .dispatch(&fresh, &stage.id, &unconfirmed)
                    .await?;
                actions += 1;
            }
        }
    }
    Ok(actions)
}

/// Sweeps every `interval` until `shutdown`.
pub async fn run(
    coordinator: Coordinator,
    interval: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                match sweep_once(&coordinator, Timestamp::now(), grace).await {
                    Ok(0) => {}
                    Ok(actions) => debug!(actions, "sweep done"),
                    Err(error) => warn!(%error, "sweep failed; will retry"),
                }
            }
        }
    }
}
