//! `/health/live`, `/health/ready`, `/metrics` and `/dashboard`: open to everyone (README.md,
//! "REST API").

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use schemars::SchemaGenerator;
use serde_json::{Value, json};

use super::AppState;
use super::bodies::{CheckState, Checks, HealthBody};
use super::routes::ApiRoute;
use crate::openapi::{Operation, Response, schema_of};

pub fn routes() -> Vec<ApiRoute> {
    fn text(_: &mut SchemaGenerator) -> Value {
        json!({"type": "string"})
    }
    let health = |description| Response::new(description).json(schema_of::<HealthBody>);
    vec![
        ApiRoute::public("/health/live").get(
            Operation::new("live", "the process serves").response(200, health("live")),
            live,
        ),
        ApiRoute::public("/health/ready").get(
            Operation::new("ready", "MongoDB and RabbitMQ answer")
                .response(200, health("ready"))
                .response(503, health("not ready")),
            ready,
        ),
        ApiRoute::public("/metrics").get(
            Operation::new("metrics", "Prometheus metrics").response(
                200,
                Response::new("Prometheus text exposition").content("text/plain", text),
            ),
            metrics,
        ),
        ApiRoute::public("/dashboard").get(
            Operation::new("dashboard", "the dashboard page")
                .response(200, Response::new("HTML").content("text/html", text)),
            super::security::dashboard,
        ),
    ]
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
    let rabbitmq = state.coordinator.broker_connected();
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
