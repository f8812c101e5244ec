//! The REST API (DESIGN §5): one router per resource, nested under the base path.

pub mod error;
pub mod extract;
mod health;
mod history;
pub mod jobs;
mod machines;
mod pipelines;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;

use crate::coordinator::Coordinator;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub coordinator: Coordinator,
}

/// The whole API under `base_path` (e.g. `/job-manager`).
pub fn router(state: AppState, base_path: &str) -> Router {
    let api = Router::new()
        .merge(jobs::router())
        .merge(history::router())
        .merge(pipelines::router())
        .merge(machines::router())
        .merge(health::router());
    let base = base_path.trim_end_matches('/');
    let app = if base.is_empty() {
        api
    } else {
        Router::new().nest(base, api)
    };
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
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
