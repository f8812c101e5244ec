//! `/pipelines`: register, list, inspect, replace and delete pipelines (README.md,
//! "Pipelines"). The rules are `PipelineBody::into_pipeline` and the catalog's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use super::bodies::{IdBody, PipelineView, status_of};
use super::error::ApiError;
use super::extract::{JsonBody, PathParam};
use crate::domain::PipelineBody;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/pipelines", get(list).post(create))
        .route("/pipelines/{id}", get(show).put(replace).delete(remove))
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(state.catalog.pipeline_ids().await?))
}

async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PipelineBody>,
) -> Result<Response, ApiError> {
    let id = state.catalog.register_pipeline(body).await?;
    Ok((StatusCode::CREATED, Json(IdBody { id })).into_response())
}

async fn show(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<PipelineView>, ApiError> {
    let pipeline = state
        .catalog
        .pipeline(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline", &id))?;
    Ok(Json(PipelineView::from(pipeline)))
}

async fn replace(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<PipelineBody>,
) -> Result<Response, ApiError> {
    let (pipeline, written) = state.catalog.put_pipeline(id, body).await?;
    Ok((status_of(written), Json(IdBody { id: pipeline.id })).into_response())
}

async fn remove(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    if state.catalog.delete_pipeline(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("pipeline", &id))
    }
}
