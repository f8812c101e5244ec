//! The one error type of the API: a status and a JSON body `{"error": {"code", "message"}}`
//! (README.md, "REST API"), and how the errors of the services and the domain map onto it
//! (docs/consistency.md, "Transient and permanent errors").

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use crate::coordinator::CoordinatorError;
use crate::domain::ValidationError;
use crate::services::{CatalogError, Failure, ResultsError};

/// The body of every error response.
#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code such as `not_found` or `unprocessable`.
    pub code: String,
    pub message: String,
    /// The JSON path of the offending value, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// An error answered to a client. 5xx bodies never carry internal detail; it is logged instead.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed but not acceptable; `path` is the JSON path of the problem when known.
    #[error("{message}")]
    Unprocessable {
        message: String,
        path: Option<String>,
    },
    /// A dependency (MongoDB, RabbitMQ) is unavailable; the request may succeed later.
    #[error("service unavailable")]
    Unavailable(String),
    /// More requests are in flight than `--max-requests` allows.
    #[error("too many requests in flight; retry later")]
    Overloaded,
    /// The response head was not ready within `--request-timeout-s`.
    #[error("the request took longer than {0} s; retry later")]
    TimedOut(u64),
    /// A fault of ours, not of the request; the detail is logged.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(what: &str, id: &str) -> Self {
        let id: String = id.chars().take(100).collect();
        Self::NotFound(format!("{what} '{id}' not found"))
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::Unprocessable {
            message: message.into(),
            path: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) | Self::Overloaded | Self::TimedOut(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unprocessable { .. } => "unprocessable",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded => "overloaded",
            Self::TimedOut(_) => "timeout",
            Self::Internal(_) => "internal",
        }
    }

    /// Seconds a client should wait before retrying, for the 503s.
    fn retry_after(&self) -> Option<&'static str> {
        match self {
            Self::Overloaded => Some("1"),
            Self::Unavailable(_) | Self::TimedOut(_) => Some("5"),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Self::Unavailable(detail) => {
                error!(detail = %detail, "dependency unavailable");
                json!({"error": {"code": self.code(), "message": "a dependency is unavailable; retry later"}})
            }
            Self::Internal(detail) => {
                error!(detail = %detail, "internal error");
                json!({"error": {"code": self.code(), "message": self.to_string()}})
            }
            Self::Unprocessable {
                message,
                path: Some(path),
            } => json!({"error": {"code": self.code(), "message": message, "path": path}}),
            other => json!({"error": {"code": other.code(), "message": other.to_string()}}),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        response
    }
}

/// A transient failure or a stored document that does not decode (the server's problem, not
/// the request's) is a 503; a value the store refuses as sent is a 422 without internal detail.
impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(detail) => Self::Unavailable(detail),
            Failure::Refused(error) => {
                tracing::warn!(%error, "request refused: it cannot be stored");
                Self::unprocessable("the request cannot be stored as sent")
            }
        }
    }
}

/// A value that breaks a rule is a 422 with the JSON path of the value, when it is in the body.
impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        Self::Unprocessable {
            path: (!error.path.is_empty()).then_some(error.path),
            message: error.message,
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Invalid(error) => error.into(),
            CatalogError::Failed(failure) => failure.into(),
            CatalogError::UnknownPipeline(_) => Self::Unprocessable {
                message: error.to_string(),
                path: Some("$.pipeline_id".into()),
            },
            CatalogError::PipelineExists(_) | CatalogError::PipelineInUse { .. } => {
                Self::Conflict(error.to_string())
            }
        }
    }
}

/// A body naming a task the job never issued is refused whole, with the task's path.
impl From<ResultsError> for ApiError {
    fn from(error: ResultsError) -> Self {
        match error {
            ResultsError::NotIssued { ref task_id, .. } => Self::Unprocessable {
                path: Some(format!("$.{task_id}")),
                message: error.to_string(),
            },
            ResultsError::UnknownJob(id) => Self::not_found("job", id.as_str()),
            ResultsError::Failed(failure) => failure.into(),
            ResultsError::Coordinator(error) => error.into(),
        }
    }
}

/// A transient failure is a 503 (try again later); a permanent one means what was sent cannot
/// be stored as it is, a 422 whose message carries no internal detail (that is logged).
impl From<CoordinatorError> for ApiError {
    fn from(error: CoordinatorError) -> Self {
        if let CoordinatorError::Store(error) = error {
            return Failure::from(error).into();
        }
        if error.is_transient() {
            return Self::Unavailable(error.to_string());
        }
        tracing::warn!(%error, "request refused: it cannot be stored");
        Self::unprocessable("the request cannot be stored as sent")
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn a_rule_broken_in_the_body_names_its_path_and_one_outside_does_not() {
        let in_body = ApiError::from(ValidationError {
            path: "$.hash".into(),
            message: "'hash' must not be empty".into(),
        });
        assert!(matches!(&in_body, ApiError::Unprocessable { path: Some(p), .. } if p == "$.hash"));
        let outside = ApiError::from(ValidationError {
            path: String::new(),
            message: "a machine id must be 1-200 bytes".into(),
        });
        assert!(matches!(
            outside,
            ApiError::Unprocessable { path: None, .. }
        ));
    }

    #[test]
    fn catalog_refusals_map_to_their_statuses() {
        let unknown = ApiError::from(CatalogError::UnknownPipeline("p".into()));
        assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            matches!(&unknown, ApiError::Unprocessable { path: Some(p), message }
            if p == "$.pipeline_id" && message == "pipeline 'p' is not registered")
        );
        let exists = ApiError::from(CatalogError::PipelineExists("p".into()));
        assert_eq!(exists.status(), StatusCode::CONFLICT);
        let in_use = ApiError::from(CatalogError::PipelineInUse {
            pipeline_id: "p".into(),
            machines: vec!["m".into()],
        });
        assert_eq!(in_use.to_string(), "pipeline 'p' is used by machine(s) m");
    }

    #[test]
    fn store_failures_are_503_or_422_without_detail() {
        let down = ApiError::from(Failure::Unavailable("connection refused".into()));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        let refused = ApiError::from(Failure::Refused("document too large".into()));
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!refused.to_string().contains("too large"), "{refused}");
    }
}
