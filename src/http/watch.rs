//! Watching a job (docs/semantics.md, "Watching a job"): `GET /jobs/{job}/events` streams its
//! transitions as Server-Sent Events until it ends, and `GET /jobs/{job}?wait=N` answers once
//! it ends or N seconds pass, for clients that cannot read a stream.
//!
//! Both read the job from the database every [`POLL`], so every replica serves any job,
//! whichever replica moves it; [`crate::domain::changes`] turns two reads into the transitions
//! between them. A stream holds no request slot (`limits.rs`) but one of [`MAX_WATCHERS`], and
//! ends when the server shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::error::ApiError;
use super::limits::Unmetered;
use crate::domain::changes::{self, JobChange};
use crate::domain::{Job, JobId, Timestamp};
use crate::services::{Failure, Queries};

/// How often a watcher reads the job.
pub const POLL: Duration = Duration::from_millis(250);
/// A comment line this often keeps an idle stream (and its proxies) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Streams one replica serves at once; one more is a 503 `overloaded`.
pub const MAX_WATCHERS: usize = 1024;
/// A stream whose reads keep failing this long ends; the client reconnects.
const GIVE_UP: Duration = Duration::from_secs(30);

/// The watchers of one server: their count, and the signal that ends them at shutdown.
#[derive(Clone, Debug)]
pub struct Watchers {
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// The longest `?wait`: 2 s less than the request timeout, so the answer beats it.
    max_wait: Duration,
}

impl Watchers {
    pub fn new(shutdown: CancellationToken, request_timeout: Duration) -> Self {
        let max_wait = request_timeout.saturating_sub(Duration::from_secs(2));
        Self {
            slots: Arc::new(Semaphore::new(MAX_WATCHERS)),
            shutdown,
            max_wait: max_wait.max(Duration::from_secs(1)),
        }
    }

    /// `seconds`, at most the longest wait.
    pub fn wait(&self, seconds: u64) -> Duration {
        Duration::from_secs(seconds).min(self.max_wait)
    }
}

/// A job as one read found it.
enum Seen {
    Active(Job),
    /// Ended: in history (or ended and not moved there yet).
    Ended(Job),
    Missing,
}

/// Reads job `id`; following `run`, a run that ended and was replaced by a rerun is read from
/// history.
async fn read(queries: &Queries, id: &JobId, run: Option<&str>) -> Result<Seen, Failure> {
    if let Some(job) = queries.job(id).await? {
        let other_run = run.is_some_and(|run| run != job.run_id);
        if !other_run {
            return Ok(match job.status.is_active() {
                true => Seen::Active(job),
                false => Seen::Ended(job),
            });
        }
    }
    Ok(match queries.history(id).await? {
        Some(record) if run.is_none_or(|run| run == record.job.run_id) => Seen::Ended(record.job),
        // The run watched ended and a rerun ended too: the run is among the earlier ones.
        Some(record) => match record
            .previous_runs
            .into_iter()
            .find(|r| Some(r.run_id.as_str()) == run)
        {
            Some(job) => Seen::Ended(job),
            None => Seen::Missing,
        },
        None => Seen::Missing,
    })
}

/// `GET /jobs/{job}/events`: 404 for a job that never was; otherwise a stream that starts with
/// the job's status and ends after its final status.
/// A token that may not see task ids gets the changes without them (`crate::access`).
pub async fn events(
    queries: Queries,
    watchers: Watchers,
    id: JobId,
    task_ids: bool,
) -> Result<Response, ApiError> {
    let Ok(permit) = watchers.slots.clone().try_acquire_owned() else {
        return Err(ApiError::Overloaded);
    };
    let (job, active) = match read(&queries, &id, None).await? {
        Seen::Missing => return Err(ApiError::not_found("job", id.as_str())),
        Seen::Active(job) => (job, true),
        Seen::Ended(job) => (job, false),
    };
    let opening = changes::current(&job, Timestamp::now());
    let first = if active {
        Watch::Following(Box::new(job))
    } else {
        Watch::Done
    };
    let state = State {
        queries,
        id,
        watch: first,
        shutdown: watchers.shutdown,
        failing_since: None,
        _permit: permit,
    };
    let stream = stream::once(async move { vec![opening] })
        .chain(stream::unfold(state, State::next))
        .flat_map(stream::iter)
        .map(move |mut change| {
            if !task_ids {
                change.task_id = None;
            }
            Ok::<_, Infallible>(sse_event(&change))
        });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    let mut response = sse.into_response();
    response.extensions_mut().insert(Unmetered);
    Ok(response)
}

fn sse_event(change: &JobChange) -> SseEvent {
    let data = serde_json::to_string(change).unwrap_or_default();
    SseEvent::default().event(change.event.as_str()).data(data)
}

/// Where a stream is.
enum Watch {
    /// The run read last, still active.
    Following(Box<Job>),
    /// The run ended: nothing more to send.
    Done,
}

struct State {
    queries: Queries,
    id: JobId,
    watch: Watch,
    shutdown: CancellationToken,
    failing_since: Option<Instant>,
    _permit: OwnedSemaphorePermit,
}

impl State {
    /// The changes of the next read that found any; `None` ends the stream.
    async fn next(mut self) -> Option<(Vec<JobChange>, Self)> {
        loop {
            let Watch::Following(last) = &self.watch else {
                return None;
            };
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(POLL) => {}
            }
            let seen = match read(&self.queries, &self.id, Some(&last.run_id)).await {
                Ok(seen) => seen,
                Err(error) => {
                    let since = *self.failing_since.get_or_insert_with(Instant::now);
                    debug!(job_id = %self.id, %error, "a watcher could not read the job");
                    if since.elapsed() > GIVE_UP {
                        return None;
                    }
                    continue;
                }
            };
            self.failing_since = None;
            let (job, ended) = match seen {
                Seen::Active(job) => (job, false),
                Seen::Ended(job) => (job, true),
                Seen::Missing => return None,
            };
            let found = changes::between(last, &job, Timestamp::now());
            self.watch = if ended {
                Watch::Done
            } else {
                Watch::Following(Box::new(job))
            };
            if !found.is_empty() {
                return Some((found, self));
            }
        }
    }
}

/// Waits until job `id` ends or `wait` passes; the job as it is then, `None` if there is none.
pub async fn wait_for_end(
    queries: &Queries,
    id: &JobId,
    wait: Duration,
) -> Result<Option<(Job, bool)>, Failure> {
    let deadline = Instant::now() + wait;
    let mut run = None;
    loop {
        let seen = read(queries, id, run.as_deref()).await?;
        match seen {
            Seen::Missing => return Ok(None),
            Seen::Ended(job) => return Ok(Some((job, true))),
            Seen::Active(job) if Instant::now() + POLL >= deadline => {
                return Ok(Some((job, false)));
            }
            Seen::Active(job) => run = Some(job.run_id),
        }
        tokio::time::sleep(POLL).await;
    }
}
