//! Typed response bodies of the API, so handlers and the OpenAPI document share one definition.
//! The bodies that are domain or read-side values live there (`JobView`, `Machine`,
//! `HistoryView`); these are the API's own.

use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{JobId, JobStatus, Pipeline, StageId, StageSpec};
use crate::services::Written;

/// `{"id": …}`: a created job or pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IdBody {
    pub id: String,
}

/// How a result posted to `POST /jobs/{job}` was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultOutcome {
    /// The result changed the job.
    Recorded,
    /// The task already had its result.
    Duplicate,
    /// The job or task no longer takes results.
    Ignored,
}

/// The answer to a posted result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResultAccepted {
    pub id: JobId,
    pub outcome: ResultOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A status a client may set on an active job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SettableStatus {
    /// End the job now; it moves to history.
    Aborted,
    /// Dispatch nothing new until it is resumed; results of tasks in flight are still recorded.
    Paused,
    /// Resume a paused or held job: queued tasks are dispatched, held tasks get a fresh attempt.
    Running,
}

/// `POST /jobs/{job}` with a status: abort, pause or resume.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: SettableStatus,
}

/// The answer to an abort, a pause or a resume: the job's status after it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusAccepted {
    pub id: JobId,
    pub status: JobStatus,
}

/// A pipeline stage with its id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StageView {
    pub id: StageId,
    #[serde(flatten)]
    pub spec: StageSpec,
}

/// A registered pipeline as `GET /pipelines/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PipelineView {
    pub id: String,
    pub name: String,
    pub stages: Vec<StageView>,
}

impl From<Pipeline> for PipelineView {
    fn from(pipeline: Pipeline) -> Self {
        Self {
            id: pipeline.id,
            name: pipeline.name,
            stages: pipeline
                .stages
                .into_iter()
                .enumerate()
                .map(|(index, spec)| StageView {
                    id: StageId::for_index(index),
                    spec,
                })
                .collect(),
        }
    }
}

/// Whether a dependency answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    Ok,
    Unavailable,
}

/// The checks behind readiness.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Checks {
    pub mongodb: CheckState,
    pub rabbitmq: CheckState,
}

/// `/health/live` and `/health/ready`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthBody {
    /// `live`, `ready` or `not_ready`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
}

/// The status of a put: 201 when it created the value, 200 when it replaced one.
pub fn status_of(written: Written) -> StatusCode {
    match written {
        Written::Created => StatusCode::CREATED,
        Written::Replaced => StatusCode::OK,
    }
}
