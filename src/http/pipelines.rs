//! `/pipelines`: register, list, inspect, replace and delete pipelines (README.md,
//! "Pipelines"). The rules are `PipelineBody::into_pipeline` and the catalog's.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::bodies::{IdBody, PipelineView, status_of};
use super::error::ApiError;
use super::extract::{JsonBody, PathParam};
use super::routes::{ApiRoute, BODY_ERRORS, READ_ERRORS};
use crate::domain::PipelineBody;
use crate::openapi::{Operation, Response as Doc, schema_of};

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new("/pipelines")
            .get(
                Operation::new("listPipelines", "ids of registered pipelines")
                    .errors(READ_ERRORS)
                    .response(200, Doc::new("pipeline ids").json(schema_of::<Vec<String>>)),
                list,
            )
            .post(
                Operation::new("createPipeline", "register a pipeline")
                    .body(schema_of::<PipelineBody>)
                    .errors(BODY_ERRORS)
                    .error(409, "a pipeline with this id exists")
                    .response(201, Doc::new("registered").json(schema_of::<IdBody>)),
                create,
            ),
        ApiRoute::new("/pipelines/{id}")
            .param("id", "the pipeline id")
            .get(
                Operation::new("getPipeline", "a pipeline with its stage ids")
                    .errors(READ_ERRORS)
                    .error(404, "no such pipeline")
                    .response(
                        200,
                        Doc::new("the pipeline").json(schema_of::<PipelineView>),
                    ),
                show,
            )
            .put(
                Operation::new("putPipeline", "create or replace a pipeline")
                    .body(schema_of::<PipelineBody>)
                    .errors(BODY_ERRORS)
                    .response(200, Doc::new("replaced").json(schema_of::<IdBody>))
                    .response(201, Doc::new("created").json(schema_of::<IdBody>)),
                replace,
            )
            .delete(
                Operation::new("deletePipeline", "delete a pipeline no machine uses")
                    .errors(READ_ERRORS)
                    .error(404, "no such pipeline")
                    .error(409, "a machine uses it")
                    .response(204, Doc::new("deleted")),
                remove,
            ),
    ]
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
