//! The REST API (docs/protocol.md, "REST surface"): one route list per resource, each route
//! registered with its documentation (`routes.rs`), nested under the base path. Handlers
//! translate HTTP into calls on the services in [`AppState`] and their outcomes into statuses;
//! the rules live in `crate::domain` and the services.

pub mod auth;
pub mod bodies;
pub mod docs;
pub mod error;
pub mod extract;
mod health;
mod history;
pub mod jobs;
pub mod limits;
pub mod listing;
mod machines;
mod pipelines;
pub mod routes;
pub mod security;
pub mod serve;
pub mod watch;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::{Extension, Router};
use serde_json::Value;

use crate::access::Tokens;
use crate::coordinator::Coordinator;
use crate::services::{Catalog, Queries, Results};
use error::ApiError;
use routes::ApiRoute;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Starts jobs and applies results and aborts.
    pub coordinator: Coordinator,
    /// Pipelines and machines.
    pub catalog: Catalog,
    /// Jobs, history and listings, read only.
    pub queries: Queries,
    /// Results posted for a job.
    pub results: Results,
    /// The streams and long polls that watch jobs.
    pub watchers: watch::Watchers,
}

/// Every route of the API, each with its documentation.
fn table() -> Vec<ApiRoute> {
    [
        jobs::routes(),
        history::routes(),
        pipelines::routes(),
        machines::routes(),
        health::routes(),
        docs::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The OpenAPI document of every route, with `base_path` (e.g. `/job-manager`, or `/` for
/// none) as the server URL.
pub fn document(base_path: &str) -> Value {
    let (_, documented) = routes::assemble(table(), Tokens::default());
    docs::document(base_path, &documented)
}

/// The whole API under `base_path` (e.g. `/job-manager`, or `""` for none; checked by
/// [`crate::config::parse_base_path`]). With `tokens`, every route but the health checks, the
/// metrics, the dashboard and the document needs a bearer token. Every response carries the
/// security headers; `limits` bounds every request.
pub fn router(state: AppState, base_path: &str, tokens: Tokens, limits: limits::Limits) -> Router {
    let base = base_path.trim_end_matches('/');
    let (api, documented) = routes::assemble(table(), tokens);
    let server = if base.is_empty() { "/" } else { base };
    let document = Arc::new(docs::document(server, &documented));
    let app = if base.is_empty() {
        api
    } else {
        Router::new().nest(base, api)
    };
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            limits::enforce,
        ))
        .layer(axum::middleware::map_response(security::headers))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for '{}'",
        uri.path().chars().take(200).collect::<String>()
    ))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this path".into())
}

#[cfg(test)]
mod tests;
