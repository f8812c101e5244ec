//! `/history` and `/history/{job}`: ended jobs.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::domain::{JobId, JobView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/history", get(list))
        .route("/history/{job}", get(show))
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(state.coordinator.store().history_ids().await?))
}

async fn show(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = JobId::parse(&job).map_err(|_| ApiError::not_found("job", &job))?;
    let record = state
        .coordinator
        .store()
        .load_history(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &job))?;
    let mut view = serde_json::to_value(JobView::from(&record.job))
        .map_err(|e| ApiError::Unavailable(format!("cannot encode job: {e}")))?;
    if !record.previous_runs.is_empty()
        && let Some(object) = view.as_object_mut()
    {
        let runs = record
            .previous_runs
            .iter()
            .filter_map(|run| serde_json::to_value(JobView::from(run)).ok())
            .collect();
        object.insert("previous_runs".into(), Value::Array(runs));
    }
    Ok(Json(view))
}
