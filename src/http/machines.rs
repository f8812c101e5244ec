//! `/machines/{machine_id}`: which pipeline a machine's jobs run.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, PathParam};
use crate::domain::{Machine, MachineBody};
use crate::store::Inserted;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/machines/{machine_id}",
        put(upsert).get(show).delete(remove),
    )
}

async fn upsert(
    State(state): State<AppState>,
    PathParam(machine_id): PathParam<String>,
    JsonBody(body): JsonBody<MachineBody>,
) -> Result<Response, ApiError> {
    let machine = Machine::new(machine_id, body)?;
    let store = state.coordinator.store();
    if store.get_pipeline(&machine.pipeline_id).await?.is_none() {
        return Err(ApiError::Unprocessable {
            message: format!(
                "pipeline '{}' is not registered",
                machine.pipeline_id.chars().take(100).collect::<String>()
            ),
            path: Some("$.pipeline_id".into()),
        });
    }
    let status = match store.put_machine(&machine).await? {
        Inserted::Created => StatusCode::CREATED,
        Inserted::AlreadyExists => StatusCode::OK,
    };
    Ok((status, Json(machine)).into_response())
}

async fn show(
    State(state): State<AppState>,
    PathParam(machine_id): PathParam<String>,
) -> Result<Json<Machine>, ApiError> {
    state
        .coordinator
        .store()
        .get_machine(&machine_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("machine", &machine_id))
}

async fn remove(
    State(state): State<AppState>,
    PathParam(machine_id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .coordinator
        .store()
        .delete_machine(&machine_id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("machine", &machine_id))
    }
}
