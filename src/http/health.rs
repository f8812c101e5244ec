//! `/health/live` and `/health/ready`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use super::bodies::{CheckState, Checks, HealthBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(super::security::dashboard))
}

/// The process is up and serving.
async fn live() -> impl IntoResponse {
    Json(HealthBody {
        status: "live".into(),
        checks: None,
    })
}

/// MongoDB answers a ping and the RabbitMQ connection is open.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mongodb = matches!(
        tokio::time::timeout(Duration::from_secs(3), state.queries.ping()).await,
        Ok(Ok(()))
    );
    let rabbitmq = state.coordinator.link().is_connected();
    let verdict = |ok: bool| {
        if ok {
            CheckState::Ok
        } else {
            CheckState::Unavailable
        }
    };
    let ready = mongodb && rabbitmq;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthBody {
        status: if ready { "ready" } else { "not_ready" }.into(),
        checks: Some(Checks {
            mongodb: verdict(mongodb),
            rabbitmq: verdict(rabbitmq),
        }),
    };
    (status, Json(body))
}

/// Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let active = tokio::time::timeout(Duration::from_secs(2), state.queries.count_active())
        .await
        .ok()
        .and_then(Result::ok);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::meter::render(active),
    )
}
