//! With access control on, a `read` token sees jobs without task ids: holding one is what
//! posting a result takes, and that needs `write`.

use std::time::{Duration, Instant};

use job_manager::demo;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_schema, spawn_app_with};

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// `GET path` with `token`, retried until `ready` holds for the body.
async fn wait_for(app: &TestApp, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, text) = call(app, Method::GET, path, WRITE, None).await;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 && ready(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{path}: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_read_token_sees_jobs_without_task_ids_and_a_write_token_with_them() {
    let app = spawn_app_with(
        |config| config.api_tokens = Some(format!("read:{READ},write:{WRITE}")),
        true,
    )
    .await;
    let pipeline = format!("/pipelines/{}", demo::PIPELINE_ID);
    let (status, _) = call(
        &app,
        Method::PUT,
        &pipeline,
        WRITE,
        Some(demo::pipeline_body()),
    )
    .await;
    assert_eq!(status, 201);
    let machine = json!({"pipeline_id": demo::PIPELINE_ID});
    let path = format!("/machines/{}", demo::MACHINE_ID);
    assert_eq!(
        call(&app, Method::PUT, &path, WRITE, Some(machine)).await.0,
        201
    );
    let new_job = json!({"hash": "roles", "machine_id": demo::MACHINE_ID, "file_name": "f"});
    let (status, id) = call(&app, Method::POST, "/jobs", WRITE, Some(new_job)).await;
    assert_eq!(status, 201, "{id}");

    let job = format!("/jobs/{id}");
    let full = wait_for(&app, &job, |b| {
        b["current_stage"]["tasks"][0]["task_id"].is_string()
    })
    .await;
    let task_id = full["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_schema("job", &full);
    let (status, text) = call(&app, Method::GET, &job, READ, None).await;
    assert_eq!(status, 200);
    assert!(
        !text.contains("task_id") && !text.contains(&task_id),
        "{text}"
    );
    let seen: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        seen["current_stage"]["tasks"][0]["status"], "pending",
        "the task is still shown"
    );
    assert_schema("job", &seen);

    // Only a write token can use the id; the job then ends and reads the same from history.
    let result = json!({ &task_id: {"csv_file": "c"} });
    assert_eq!(
        call(&app, Method::POST, &job, READ, Some(result.clone()))
            .await
            .0,
        403
    );
    assert_eq!(
        call(&app, Method::POST, &job, WRITE, Some(result)).await.0,
        202
    );
    let abort = Some(json!({"status": "aborted"}));
    assert_eq!(call(&app, Method::POST, &job, WRITE, abort).await.0, 202);
    let history = format!("/history/{id}");
    let archived = wait_for(&app, &history, |b| b["status"] == "aborted").await;
    assert!(archived.to_string().contains(&task_id));
    assert_schema("history-record", &archived);
    let (status, text) = call(&app, Method::GET, &history, READ, None).await;
    assert_eq!(status, 200);
    assert!(
        !text.contains("task_id") && !text.contains(&task_id),
        "{text}"
    );
    assert_schema(
        "history-record",
        &serde_json::from_str(&text).expect("json"),
    );
    app.cleanup().await;
}
