//! The REST API (docs/protocol.md, "REST surface"): one router per resource, nested under the
//! base path.

pub mod auth;
pub mod bodies;
pub mod error;
pub mod extract;
mod health;
mod history;
pub mod jobs;
pub mod limits;
pub mod listing;
mod machines;
mod pipelines;
pub mod security;
pub mod serve;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;

use crate::coordinator::Coordinator;
use crate::services::{Catalog, Queries};
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Starts jobs and applies results and aborts.
    pub coordinator: Coordinator,
    /// Pipelines and machines.
    pub catalog: Catalog,
    /// Jobs, history and listings, read only.
    pub queries: Queries,
}

/// The whole API under `base_path` (e.g. `/job-manager`, or `""` for none; checked by
/// [`crate::config::parse_base_path`]). With `tokens`, every route but the health checks needs
/// a bearer token. Every response carries the security headers; `limits` bounds every request.
pub fn router(
    state: AppState,
    base_path: &str,
    tokens: crate::access::Tokens,
    limits: limits::Limits,
) -> Router {
    let mut protected = Router::new()
        .merge(jobs::router())
        .merge(history::router())
        .merge(pipelines::router())
        .merge(machines::router());
    if !tokens.is_empty() {
        protected = protected.route_layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(tokens),
            auth::authorize,
        ));
    }
    let base = base_path.trim_end_matches('/');
    let document = std::sync::Arc::new(crate::openapi::document(if base.is_empty() {
        "/"
    } else {
        base
    }));
    let public = health::router().route(
        "/openapi.json",
        axum::routing::get(move || {
            let document = document.clone();
            async move { axum::Json(document.as_ref().clone()) }
        }),
    );
    let api = protected.merge(public);
    let app = if base.is_empty() {
        api
    } else {
        Router::new().nest(base, api)
    };
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
