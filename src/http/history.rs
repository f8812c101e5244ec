//! `/history` and `/history/{job}`: ended jobs.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use super::bodies::HistoryView;
use super::error::ApiError;
use super::extract::PathParam;
use crate::domain::{JobId, JobView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/history", get(super::listing::history))
        .route("/history/{job}", get(show))
}

async fn show(
    State(state): State<AppState>,
    PathParam(job): PathParam<String>,
) -> Result<Json<HistoryView>, ApiError> {
    let id = JobId::parse(&job).map_err(|_| ApiError::not_found("job", &job))?;
    let record = state
        .coordinator
        .store()
        .load_history(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &job))?;
    Ok(Json(HistoryView {
        job: JobView::from(&record.job),
        previous_runs: record.previous_runs.iter().map(JobView::from).collect(),
    }))
}
