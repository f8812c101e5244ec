//! `/jobs` and `/jobs/{job}`: start, list, inspect, advance and abort jobs (README.md,
//! "REST API"; docs/semantics.md, "Starting a job" and "Abort").

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemars::SchemaGenerator;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::as_seen_by;
use super::bodies::{IdBody, ResultAccepted, ResultOutcome, StatusAccepted, StatusChange};
use super::error::ApiError;
use super::extract::{JsonBody, PathParam};
use super::listing;
use super::routes::{ApiRoute, BODY_ERRORS, READ_ERRORS};
use super::watch;
use crate::access::Role;
use crate::coordinator::{Created, Handled};
use crate::domain::changes::JobChange;
use crate::domain::engine::Ignored;
use crate::domain::{Event, JobId, JobView, NewJob, NewJobBody, TaskId, TaskResult};
use crate::messages::{normalize_outputs, outputs_schema};
use crate::openapi::Param;
use crate::openapi::{Operation, Response as Doc, schema_of};
use crate::services::Recorded;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::Deserialize;

/// Summary of `POST /jobs/{job}`.
const UPDATE: &str = "record results ({\"<task_id>\": outputs}), or set the status: abort \
     ({\"status\": \"aborted\"}), pause ({\"status\": \"paused\"}) or resume ({\"status\": \"running\"})";
/// What `POST /jobs/{job}` answers when it took the body.
const ACCEPTED: &str = "recorded, already recorded, or ignored for an ended job; or the status \
     after an abort, pause or resume (also when the job already had it)";
/// The statuses a client may set, and what each asks of the job.
const SETTABLE: &str = "the status a client may set is \"aborted\", \"paused\" or \"running\"";

pub fn routes() -> Vec<ApiRoute> {
    let started = id_doc("the job id, as text or as {\"id\"} when Accept asks for JSON only");
    let active = id_doc("that job is already active; its id, in the same form");
    vec![
        ApiRoute::new("/jobs")
            .get(
                Operation::new(
                    "listJobs",
                    "ids of active jobs: pending, running, paused, held",
                )
                .params(listing::params())
                .errors(READ_ERRORS)
                .response(200, listing::ids_response()),
                listing::active,
            )
            .post(
                Operation::new(
                    "startJob",
                    "start a job, or rerun an ended one from a stage (from_stage)",
                )
                .body(schema_of::<NewJobBody>)
                .errors(BODY_ERRORS)
                .response(201, started)
                .response(409, active),
                create,
            ),
        ApiRoute::new("/jobs/{job}")
            .param("job", "the 22-character job id")
            .get(
                Operation::new(
                    "getJob",
                    "an active job; with wait, once it ends or the seconds pass",
                )
                .params([Param::query(
                    "wait",
                    WAIT,
                    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
                )])
                .errors(READ_ERRORS)
                .error(404, "no such active job (with wait: no such job)")
                .response(200, Doc::new("the job record").json(schema_of::<JobView>)),
                show,
            )
            .post(
                Operation::new("updateJob", UPDATE)
                    .body(job_update_schema)
                    .errors(BODY_ERRORS)
                    .error(404, "no such job")
                    .error(409, "the job already ended (abort, pause, resume)")
                    .response(202, Doc::new(ACCEPTED).json(accepted_schema)),
                update,
            ),
        ApiRoute::new("/jobs/{job}/events")
            .param("job", "the 22-character job id")
            .get(
                Operation::new("watchJob", EVENTS)
                    .errors(READ_ERRORS)
                    .error(404, "no such job, active or ended")
                    .response(
                        200,
                        Doc::new(STREAM).content("text/event-stream", schema_of::<JobChange>),
                    ),
                watch_events,
            ),
    ]
}

/// What `wait` on `GET /jobs/{job}` does.
const WAIT: &str = "seconds to wait for the job to end (capped at the request timeout less \
     2 s): the answer is the job once it ended (from history) or as it is when the time is up; \
     a long poll holds a request slot while it waits, and a replica takes a quarter of its \
     request slots in long polls at once (503 overloaded beyond)";
/// Summary of `GET /jobs/{job}/events`.
const EVENTS: &str = "the job's transitions as Server-Sent Events, from now until it ends";
/// The stream of `GET /jobs/{job}/events`.
const STREAM: &str = "events `status` (first, and on every change), `stage.started`, \
     `result.recorded`, `stage.completed`; the data of each event is a JobChange as JSON (the \
     schema below is of one event's data, not of the whole body). The stream ends after the \
     job's final status; an end without one (a replica shutting down, an hour passed) means \
     reconnect. 503 overloaded when the replica serves 1,024 streams";

/// The id of a started (or already active) job, as text or JSON.
fn id_doc(description: &'static str) -> Doc {
    fn text(_: &mut SchemaGenerator) -> Value {
        json!({"type": "string"})
    }
    Doc::new(description)
        .content("text/plain", text)
        .json(schema_of::<IdBody>)
}

/// Body of `POST /jobs/{job}`: a status change, or results keyed by task id.
fn job_update_schema(generator: &mut SchemaGenerator) -> Value {
    let status = schema_of::<StatusChange>(generator);
    let outputs = outputs_schema(generator).to_value();
    json!({"oneOf": [
        status,
        {"type": "object", "minProperties": 1,
         "propertyNames": {"pattern": "^[0-9a-f]{32}$"},
         "additionalProperties": outputs}
    ]})
}

fn accepted_schema(generator: &mut SchemaGenerator) -> Value {
    let recorded = schema_of::<ResultAccepted>(generator);
    let status = schema_of::<StatusAccepted>(generator);
    json!({"oneOf": [recorded, status]})
}

/// Whether the client wants the id as JSON: `Accept` names `application/json` but not `text/plain`.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    accept.contains("application/json") && !accept.contains("text/plain")
}

fn id_response(status: StatusCode, id: &JobId, json: bool) -> Response {
    if json {
        (status, Json(IdBody { id: id.to_string() })).into_response()
    } else {
        (
            status,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            id.to_string(),
        )
            .into_response()
    }
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewJobBody>,
) -> Result<Response, ApiError> {
    let request = NewJob::try_from(body)?;
    let json = wants_json(&headers);
    let machine_id = request.machine_id.clone();
    match state.coordinator.create_job(request).await? {
        Created::Started(id) => Ok(id_response(StatusCode::CREATED, &id, json)),
        Created::AlreadyActive(id) => Ok(id_response(StatusCode::CONFLICT, &id, json)),
        Created::UnknownMachine => Err(ApiError::Unprocessable {
            message: format!(
                "machine '{}' is not registered",
                machine_id.chars().take(100).collect::<String>()
            ),
            path: Some("$.machine_id".into()),
        }),
        Created::CannotRerun(refused) => Err(ApiError::Unprocessable {
            message: refused.message,
            path: Some(refused.path.into()),
        }),
        Created::UnknownPipeline(pipeline) => Err(ApiError::Unprocessable {
            message: format!("machine's pipeline '{pipeline}' is not registered"),
            path: Some("$.machine_id".into()),
        }),
    }
}

fn parse_job_id(job: &str) -> Result<JobId, ApiError> {
    JobId::parse(job).map_err(|_| ApiError::not_found("job", job))
}

async fn show(
    State(state): State<AppState>,
    role: Option<Extension<Role>>,
    PathParam(job): PathParam<String>,
    params: Result<Query<ShowParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_job_id(&job)?;
    let Query(params) =
        params.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    if let Some(seconds) = params.wait.filter(|s| *s > 0) {
        let found = watch::long_poll(&state.queries, &state.watchers, &id, seconds).await?;
        let job = found.ok_or_else(|| ApiError::not_found("job", &job))?;
        return as_seen_by(&JobView::from(&job), role);
    }
    let view = state
        .queries
        .job_view(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &job))?;
    as_seen_by(&view, role)
}

/// Query of `GET /jobs/{job}`: an unknown parameter is a 400, as on the listings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowParams {
    wait: Option<u64>,
}

async fn watch_events(
    State(state): State<AppState>,
    role: Option<Extension<Role>>,
    PathParam(job): PathParam<String>,
) -> Result<Response, ApiError> {
    let id = parse_job_id(&job)?;
    let task_ids = crate::access::may_see_task_ids(role.map(|Extension(role)| role));
    watch::events(state.queries.clone(), state.watchers.clone(), id, task_ids).await
}

/// `{"status": "aborted" | "paused" | "running"}` sets the status; `{"<task_id>": <outputs>, …}`
/// records results.
async fn update(
    State(state): State<AppState>,
    PathParam(job): PathParam<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let id = parse_job_id(&job)?;
    if let Some(status) = body.get("status") {
        let event = match status.as_str() {
            Some("aborted") => Event::Abort,
            Some("paused") => Event::Pause,
            Some("running") => Event::Resume,
            _ => return Err(status_error(SETTABLE)),
        };
        if body.len() != 1 {
            return Err(status_error("a status change takes no other key"));
        }
        return set_status(&state, &id, event).await;
    }
    if body.is_empty() {
        return Err(ApiError::unprocessable(
            "expected {\"status\": \"aborted\" | \"paused\" | \"running\"} or {\"<task_id>\": <outputs>}",
        ));
    }
    record_results(&state, &id, body).await
}

fn status_error(message: &str) -> ApiError {
    ApiError::Unprocessable {
        message: message.into(),
        path: Some("$.status".into()),
    }
}

async fn ended_or_missing(state: &AppState, id: &JobId) -> Result<ApiError, ApiError> {
    Ok(match state.queries.history(id).await? {
        Some(record) => ApiError::Conflict(format!(
            "job '{id}' already ended as {}",
            record.job.status.as_str()
        )),
        None => ApiError::not_found("job", id.as_str()),
    })
}

/// Aborts, pauses or resumes. Pause and resume are idempotent: a job already in the status
/// asked for answers as if it had just changed.
async fn set_status(state: &AppState, id: &JobId, event: Event) -> Result<Response, ApiError> {
    let status = match state.coordinator.handle(id, event).await? {
        Handled::Applied { job, .. } => job.status,
        Handled::Ignored(Ignored::AlreadyInStatus(status)) => status,
        Handled::Ignored(Ignored::JobNotActive(status)) => {
            return Err(ApiError::Conflict(format!(
                "job '{id}' already ended as {}",
                status.as_str()
            )));
        }
        Handled::Ignored(other) => {
            return Err(ApiError::Conflict(format!(
                "the status of job '{id}' did not change: {}",
                other.as_str()
            )));
        }
        Handled::UnknownJob => return Err(ended_or_missing(state, id).await?),
    };
    let body = StatusAccepted {
        id: id.clone(),
        status,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The results of a body, each with a parsed task id and outputs that can be stored.
fn parse_results(body: Map<String, Value>) -> Result<Vec<TaskResult>, ApiError> {
    let mut results = Vec::with_capacity(body.len());
    for (key, outputs) in body {
        let shown = || {
            key.chars()
                .take(64)
                .collect::<String>()
                .escape_debug()
                .to_string()
        };
        let task_id = TaskId::parse(&key).map_err(|e| ApiError::Unprocessable {
            message: e.to_string(),
            path: Some(format!("$.{}", shown())),
        })?;
        // A value that cannot be stored is refused here, where the client can still fix it.
        let outputs = normalize_outputs(outputs).map_err(|e| ApiError::Unprocessable {
            message: format!("invalid outputs: {}", e.message),
            path: Some(format!("$.{}{}", shown(), e.path)),
        })?;
        results.push(TaskResult {
            task_id,
            run_id: None,
            outputs,
            log: None,
            error: None,
        });
    }
    Ok(results)
}

async fn record_results(
    state: &AppState,
    id: &JobId,
    body: Map<String, Value>,
) -> Result<Response, ApiError> {
    let results = parse_results(body)?;
    Ok(match state.results.record(id, results).await? {
        Recorded::Recorded => accepted(id, ResultOutcome::Recorded, ""),
        Recorded::Duplicate => accepted(id, ResultOutcome::Duplicate, "already recorded"),
        Recorded::Ignored(reason) => accepted(id, ResultOutcome::Ignored, &reason),
    })
}

fn accepted(id: &JobId, outcome: ResultOutcome, reason: &str) -> Response {
    let body = ResultAccepted {
        id: id.clone(),
        outcome,
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}
