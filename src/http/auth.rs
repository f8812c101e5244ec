//! Bearer-token access control as axum middleware, on only when tokens are configured
//! (README.md, "Access control"). The tokens and roles are [`crate::access`]; this module reads
//! the `Authorization` header, refuses with 401 or 403, and puts the caller's role into the
//! request's extensions, so a handler can show a `read` caller less.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::access::{Role, Tokens};

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"job-manager\""),
        );
    }
    response
}

/// Middleware: 401 without a valid bearer token, 403 when its role is too weak.
pub async fn authorize(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let needed = match *request.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => Role::Read,
        _ => Role::Write,
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required",
        );
    };
    match tokens.role_of(presented.as_bytes()) {
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        ),
        Some(role) if role < needed => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may only read",
        ),
        Some(role) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
    }
}

/// `view` as JSON for a caller with `role`: without task ids for one that may not see them.
pub fn as_seen_by<T: serde::Serialize>(
    view: &T,
    role: Option<axum::Extension<Role>>,
) -> Result<axum::Json<serde_json::Value>, super::error::ApiError> {
    let mut value = serde_json::to_value(view).map_err(|e| {
        super::error::ApiError::Internal(format!("cannot serialise a job view: {e}"))
    })?;
    if !crate::access::may_see_task_ids(role.map(|axum::Extension(role)| role)) {
        crate::access::hide_task_ids(&mut value);
    }
    Ok(axum::Json(value))
}
