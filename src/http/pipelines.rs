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
use crate::domain::pipeline::ValidationError;
use crate::domain::{Pipeline, PipelineBody};
use crate::messages::check_keys;
use crate::store::Inserted;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/pipelines", get(list).post(create))
        .route("/pipelines/{id}", get(show).put(replace).delete(remove))
}

fn invalid(error: ValidationError) -> ApiError {
    ApiError::Unprocessable {
        message: error.message,
        path: Some(error.path),
    }
}

fn validate(body: PipelineBody, id: String) -> Result<Pipeline, ApiError> {
    for (index, stage) in body.stages.iter().enumerate() {
        check_keys(&stage.worker.configs).map_err(|e| ApiError::Unprocessable {
            message: e.message,
            path: Some(format!("$.stages[{index}].worker.configs{}", e.path)),
        })?;
    }
    body.into_pipeline(id).map_err(invalid)
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(state.store.pipeline_ids().await?))
}

async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PipelineBody>,
) -> Result<Response, ApiError> {
    let id = body
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
    let pipeline = validate(body, id)?;
    match state.store.insert_pipeline(&pipeline).await? {
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
        .store
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
    if body.id.as_deref().is_some_and(|given| given != id) {
        return Err(ApiError::Unprocessable {
            message: "the body's id differs from the path's".into(),
            path: Some("$.id".into()),
        });
    }
    let pipeline = validate(body, id)?;
    let status = match state.store.put_pipeline(&pipeline).await? {
        Inserted::Created => StatusCode::CREATED,
        Inserted::AlreadyExists => StatusCode::OK,
    };
    Ok((status, Json(IdBody { id: pipeline.id })).into_response())
}

async fn remove(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    let store = &state.store;
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
