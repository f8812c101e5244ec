//! `/machines/{machine_id}`: which pipeline a machine's jobs run (README.md, "REST API"). The
//! rules are `Machine::new` and the catalog's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};

use super::AppState;
use super::bodies::status_of;
use super::error::ApiError;
use super::extract::{JsonBody, PathParam};
use crate::domain::{Machine, MachineBody};

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
    let (machine, written) = state.catalog.put_machine(machine_id, body).await?;
    Ok((status_of(written), Json(machine)).into_response())
}

async fn show(
    State(state): State<AppState>,
    PathParam(machine_id): PathParam<String>,
) -> Result<Json<Machine>, ApiError> {
    state
        .catalog
        .machine(&machine_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("machine", &machine_id))
}

async fn remove(
    State(state): State<AppState>,
    PathParam(machine_id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    if state.catalog.delete_machine(&machine_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("machine", &machine_id))
    }
}
