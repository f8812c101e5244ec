//! Typed response bodies of the API, so handlers and the OpenAPI document share one definition.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{JobId, JobStatus, JobView, Pipeline, StageId, StageSpec};

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

/// The answer to an abort.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AbortAccepted {
    pub id: JobId,
    pub status: JobStatus,
}

/// An archived job, with the runs of the same file that it replaced.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HistoryView {
    #[serde(flatten)]
    pub job: JobView,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_runs: Vec<JobView>,
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
