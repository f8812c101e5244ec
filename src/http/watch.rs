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

/// How often a watcher looks at the job: a read of its run and version, and a full read only
/// when they changed.
pub const POLL: Duration = Duration::from_millis(250);
/// Streams one replica serves at once; one more is a 503 `overloaded`.
pub const MAX_WATCHERS: usize = 1024;
/// A stream whose reads keep failing this long ends; the client reconnects.
const GIVE_UP: Duration = Duration::from_secs(30);
/// A stream lasts at most this long, then ends (the client reconnects), so a client that
/// stopped reading cannot hold a slot for the life of a job held for days.
const MAX_STREAM: Duration = Duration::from_secs(3600);

/// The watchers of one server: their count, and the signal that ends them at shutdown.
#[derive(Clone, Debug)]
pub struct Watchers {
    slots: Arc<Semaphore>,
    /// Long polls at once: a quarter of the request slots, since each holds one for its wait.
    polls: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// The longest `?wait`: 2 s less than the request timeout (three quarters of a short
    /// one), so the answer beats the timeout.
    max_wait: Duration,
    /// A comment line this often keeps an idle stream (and its proxies) open: 15 s, or the
    /// request timeout when shorter (a silent connection is cut after twice that).
    keep_alive: Duration,
}

impl Watchers {
    pub fn new(
        shutdown: CancellationToken,
        request_timeout: Duration,
        max_requests: usize,
    ) -> Self {
        let max_wait = match request_timeout.checked_sub(Duration::from_secs(2)) {
            Some(wait) if wait >= Duration::from_secs(6) => wait,
            _ => request_timeout * 3 / 4,
        };
        Self {
            slots: Arc::new(Semaphore::new(MAX_WATCHERS)),
            polls: Arc::new(Semaphore::new((max_requests / 4).max(1))),
            shutdown,
            max_wait,
            keep_alive: request_timeout.min(Duration::from_secs(15)),
        }
    }
}

/// Whether job `id` is no longer `last` as read: another version or run, or gone.
async fn changed(queries: &Queries, id: &JobId, last: &Job) -> Result<bool, Failure> {
    let stamp = queries.job_stamp(id).await?;
    Ok(stamp.is_none_or(|(run, version)| run != last.run_id || version != last.version))
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
    let keep_alive = watchers.keep_alive;
    let state = State {
        queries,
        id,
        watch: first,
        shutdown: watchers.shutdown,
        failing_since: None,
        opened: Instant::now(),
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
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive));
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
    opened: Instant,
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
            if self.opened.elapsed() > MAX_STREAM {
                return None;
            }
            let seen = match changed(&self.queries, &self.id, last).await {
                Ok(false) => Ok(None),
                Ok(true) => read(&self.queries, &self.id, Some(&last.run_id))
                    .await
                    .map(Some),
                Err(error) => Err(error),
            };
            let seen = match seen {
                Ok(None) => {
                    self.failing_since = None;
                    continue;
                }
                Ok(Some(seen)) => seen,
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

/// `GET /jobs/{job}?wait=N`: waits until job `id` ends, `seconds` pass (at most the longest
/// wait) or the server shuts down; the job as it is then (ended or not), `None` if there is
/// none. One of the long-poll slots, or 503 `overloaded`.
pub async fn long_poll(
    queries: &Queries,
    watchers: &Watchers,
    id: &JobId,
    seconds: u64,
) -> Result<Option<Job>, ApiError> {
    let Ok(_permit) = watchers.polls.clone().try_acquire_owned() else {
        return Err(ApiError::Overloaded);
    };
    let deadline = Instant::now() + Duration::from_secs(seconds).min(watchers.max_wait);
    let mut last = match read(queries, id, None).await? {
        Seen::Missing => return Ok(None),
        Seen::Ended(job) => return Ok(Some(job)),
        Seen::Active(job) => job,
    };
    loop {
        if Instant::now() + POLL >= deadline {
            return Ok(Some(last));
        }
        tokio::select! {
            () = watchers.shutdown.cancelled() => return Ok(Some(last)),
            () = tokio::time::sleep(POLL) => {}
        }
        if !changed(queries, id, &last).await? {
            continue;
        }
        match read(queries, id, Some(&last.run_id)).await? {
            Seen::Missing => return Ok(Some(last)),
            Seen::Ended(job) => return Ok(Some(job)),
            Seen::Active(job) => last = job,
        }
    }
}
