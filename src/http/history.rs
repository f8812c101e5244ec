//! `/history` and `/history/{job}`: ended jobs (README.md, "REST API").

use axum::extract::State;
use axum::{Extension, Json};

use super::AppState;
use super::auth::as_seen_by;
use super::error::ApiError;
use super::extract::PathParam;
use super::listing;
use super::routes::{ApiRoute, READ_ERRORS};
use crate::access::Role;
use crate::domain::JobId;
use crate::openapi::{Operation, Response, schema_of};
use crate::services::HistoryView;

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new("/history").get(
            Operation::new("listHistory", "ids of ended jobs")
                .params(listing::params())
                .errors(READ_ERRORS)
                .response(200, listing::ids_response()),
            listing::history,
        ),
        ApiRoute::new("/history/{job}")
            .param("job", "the 22-character job id")
            .get(
                Operation::new("getHistory", "an ended job")
                    .errors(READ_ERRORS)
                    .error(404, "no such job in history")
                    .response(
                        200,
                        Response::new("the archived record").json(schema_of::<HistoryView>),
                    ),
                show,
            ),
    ]
}

async fn show(
    State(state): State<AppState>,
    role: Option<Extension<Role>>,
    PathParam(job): PathParam<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = JobId::parse(&job).map_err(|_| ApiError::not_found("job", &job))?;
    let view = state
        .queries
        .history_view(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &job))?;
    as_seen_by(&view, role)
}
