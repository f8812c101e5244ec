//! `/pipelines`: register, list, inspect, replace and delete pipelines.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use super::bodies::{IdBody, PipelineView};
use super::error::ApiError;
use super::extract::{JsonBody, PathParam};
use crate::domain::PipelineBody;
use crate::store::Inserted;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/pipelines", get(list).post(create))
        .route("/pipelines/{id}", get(show).put(replace).delete(remove))
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(state.coordinator.store().pipeline_ids().await?))
}

async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PipelineBody>,
) -> Result<Response, ApiError> {
    let id = body
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
    let pipeline = body.into_pipeline(id)?;
    match state.coordinator.store().insert_pipeline(&pipeline).await? {
        Inserted::Created => {
            Ok((StatusCode::CREATED, Json(IdBody { id: pipeline.id })).into_response())
        }
        Inserted::AlreadyExists => Err(ApiError::Conflict(format!(
            "pipeline '{}' already exists; use PUT to replace it",
            pipeline.id
        ))),
    }
}

async fn show(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<PipelineView>, ApiError> {
    let pipeline = state
        .coordinator
        .store()
        .get_pipeline(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline", &id))?;
    Ok(Json(PipelineView::from(pipeline)))
}

async fn replace(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<PipelineBody>,
) -> Result<Response, ApiError> {
    let pipeline = body.into_pipeline_at(id)?;
    let status = match state.coordinator.store().put_pipeline(&pipeline).await? {
        Inserted::Created => StatusCode::CREATED,
        Inserted::AlreadyExists => StatusCode::OK,
    };
    Ok((status, Json(IdBody { id: pipeline.id })).into_response())
}

async fn remove(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.coordinator.store();
    let users = store.machines_using(&id, 10).await?;
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "pipeline '{id}' is used by machine(s) {}",
            users.join(", ")
        )));
    }
    if store.delete_pipeline(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("pipeline", &id))
    }
}
