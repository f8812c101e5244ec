//! Span export over OTLP/HTTP (built with `--features otel`), to a stand-in collector.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use job_manager::config::LogFormat;

use crate::helpers::spawn_app;

/// What the stand-in collector received: content type and body of each request.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[tokio::test]
async fn spans_are_exported_over_otlp_http() {
    let received: Received = Arc::default();
    let collector = axum::Router::new().route(
        "/v1/traces",
        post({
            let received = received.clone();
            move |headers: HeaderMap, body: Bytes| {
                let received = received.clone();
                async move {
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    received.lock().expect("lock").push((kind, body.to_vec()));
                    ""
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let telemetry = job_manager::telemetry::init_with(
        LogFormat::Text,
        Some(&format!("http://{address}/v1/traces")),
    );
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let id = app.start_job("otel").await;
    app.wait_for_stage(&id, "01").await;
    telemetry.shutdown().await;

    let received = received.lock().expect("lock").clone();
    assert!(!received.is_empty(), "no span batch reached the collector");
    assert!(
        received
            .iter()
            .all(|(kind, _)| kind == "application/x-protobuf")
    );
    let bytes: Vec<u8> = received.into_iter().flat_map(|(_, body)| body).collect();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"job-manager"),
        "the service name travels with the spans"
    );
    assert!(
        contains(b"create_job"),
        "the coordinator's spans are exported"
    );
    assert!(contains(id.as_bytes()), "spans carry the job id");
    app.cleanup().await;
}
