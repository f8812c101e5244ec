//! `/machines/{machine_id}`: which pipeline a machine's jobs run (README.md, "REST API"). The
//! rules are `Machine::new` and the catalog's.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::bodies::status_of;
use super::error::ApiError;
use super::extract::{JsonBody, PathParam};
use super::routes::{ApiRoute, BODY_ERRORS, READ_ERRORS};
use crate::domain::{Machine, MachineBody};
use crate::openapi::{Operation, Response as Doc, schema_of};

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new("/machines/{machine_id}")
            .param("machine_id", "the machine id")
            .get(
                Operation::new("getMachine", "a machine")
                    .errors(READ_ERRORS)
                    .error(404, "no such machine")
                    .response(200, Doc::new("the machine").json(schema_of::<Machine>)),
                show,
            )
            .put(
                Operation::new("putMachine", "create or replace a machine")
                    .body(schema_of::<MachineBody>)
                    .errors(BODY_ERRORS)
                    .response(200, Doc::new("replaced").json(schema_of::<Machine>))
                    .response(201, Doc::new("created").json(schema_of::<Machine>)),
                upsert,
            )
            .delete(
                Operation::new("deleteMachine", "delete a machine")
                    .errors(READ_ERRORS)
                    .error(404, "no such machine")
                    .response(204, Doc::new("deleted")),
                remove,
            ),
    ]
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
