//! `/machines/{machine_id}`: which pipeline a machine's jobs run.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, PathParam};
use crate::domain::pipeline::{MAX_CONFIGS_BYTES, configs_too_large};
use crate::domain::{Machine, MachineBody};
use crate::messages::check_keys;
use crate::store::Inserted;

/// Longest machine id, in bytes.
pub const MAX_MACHINE_ID_LEN: usize = 200;

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
    if machine_id.trim().is_empty() || machine_id.len() > MAX_MACHINE_ID_LEN {
        return Err(ApiError::unprocessable(format!(
            "a machine id must be 1-{MAX_MACHINE_ID_LEN} bytes"
        )));
    }
    check_keys(&body.configs).map_err(|e| ApiError::Unprocessable {
        message: e.message,
        path: Some(format!("$.configs{}", e.path)),
    })?;
    if configs_too_large(&body.configs) {
        return Err(ApiError::Unprocessable {
            message: format!("configs must be at most {MAX_CONFIGS_BYTES} bytes as JSON"),
            path: Some("$.configs".into()),
        });
    }
    let store = &state.store;
    if store.get_pipeline(&body.pipeline_id).await?.is_none() {
        return Err(ApiError::Unprocessable {
            message: format!(
                "pipeline '{}' is not registered",
                body.pipeline_id.chars().take(100).collect::<String>()
            ),
            path: Some("$.pipeline_id".into()),
        });
    }
    let machine = Machine {
        machine_id,
        pipeline_id: body.pipeline_id,
        configs: body.configs,
    };
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
        .store
        .get_machine(&machine_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("machine", &machine_id))
}

async fn remove(
    State(state): State<AppState>,
    PathParam(machine_id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_machine(&machine_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("machine", &machine_id))
    }
}
