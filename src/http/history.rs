//! `/history` and `/history/{job}`: ended jobs (README.md, "REST API").

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::AppState;
use super::error::ApiError;
use super::extract::PathParam;
use crate::access::{Role, hide_task_ids, may_see_task_ids};
use crate::domain::JobId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/history", get(super::listing::history))
        .route("/history/{job}", get(show))
}

async fn show(
    State(state): State<AppState>,
    role: Option<Extension<Role>>,
    PathParam(job): PathParam<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = JobId::parse(&job).map_err(|_| ApiError::not_found("job", &job))?;
    let view = state
        .queries
        .history_view(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &job))?;
    let mut view = serde_json::to_value(view)
        .map_err(|e| ApiError::Internal(format!("cannot serialise job {id}: {e}")))?;
    if !may_see_task_ids(role.map(|Extension(role)| role)) {
        hide_task_ids(&mut view);
    }
    Ok(Json(view))
}
