//! How many requests run at once, and how long one may take to produce its response head.
//!
//! A request over `--max-requests` gets 503 `overloaded` with `Retry-After` at once, instead of
//! queueing. A request whose response head is not ready within `--request-timeout-s` gets 503
//! `timeout` (the server was slow, not the client, so not 408); the handler future is dropped,
//! which also bounds reading the request body. A streamed body (a listing without `limit`) keeps
//! its slot until it has been sent, since it holds a database cursor; a client that stops
//! reading it is cut off by the connection's idle timeout (`serve.rs`), which frees the slot.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::error::ApiError;

/// The limits shared by every request of one server.
#[derive(Clone, Debug)]
pub struct Limits {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Limits {
    pub fn new(max_requests: usize, timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_requests.max(1))),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Middleware: takes a slot or refuses, bounds the time to the response head.
pub async fn enforce(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let Ok(slot) = limits.slots.clone().try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    let method = request.method().clone();
    let path: String = request.uri().path().chars().take(200).collect();
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => hold_until_sent(response, slot),
        Err(_) => {
            warn!(%method, path, timeout_s = limits.timeout.as_secs(), "request timed out");
            ApiError::TimedOut(limits.timeout.as_secs()).into_response()
        }
    }
}

/// Marks a response whose streamed body does not hold a request slot: a job's event stream,
/// which lasts as long as the job and is bounded by its own count (`watch.rs`).
#[derive(Clone, Copy, Debug)]
pub struct Unmetered;

/// Keeps `slot` until a streamed body ends (or is dropped); a body already whole frees it now.
fn hold_until_sent(response: Response, slot: OwnedSemaphorePermit) -> Response {
    let body = response.body();
    if response.extensions().get::<Unmetered>().is_some()
        || body.is_end_stream()
        || body.size_hint().exact().is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
