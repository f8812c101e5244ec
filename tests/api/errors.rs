//! Every error status the API promises, with a JSON body, and never a 5xx for bad input.

use job_manager::demo;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn every_error_status_has_a_json_body() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let json = Some("application/json");

    // 400: malformed JSON.
    let (status, body) = raw(
        &app,
        reqwest::Method::POST,
        "/jobs",
        json,
        b"{\"hash\": ".to_vec(),
    )
    .await;
    assert_error(status, &body, 400, "bad_request");
    // 415: wrong content type.
    let (status, body) = raw(
        &app,
        reqwest::Method::POST,
        "/jobs",
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await;
    assert_error(status, &body, 415, "unsupported_media_type");
    let (status, body) = raw(&app, reqwest::Method::POST, "/jobs", None, b"{}".to_vec()).await;
    assert_error(status, &body, 415, "unsupported_media_type");
    // 422: well-formed but the wrong shape, or an unknown machine.
    let (status, body) = app.post_json("/jobs", &json!({"hash": 1})).await;
    assert_error(status, &body, 422, "unprocessable");
    let (status, body) = app
        .post_json(
            "/jobs",
            &json!({"hash": "h", "machine_id": "nope", "file_name": "f"}),
        )
        .await;
    assert_error(status, &body, 422, "unprocessable");
    assert_eq!(body["error"]["path"], "$.machine_id");
    let (status, body) = app
        .post_json(
            "/jobs",
            &json!({"hash": "", "machine_id": demo::MACHINE_ID, "file_name": "f"}),
        )
        .await;
    assert_error(status, &body, 422, "unprocessable");
    // 404: unknown job, history entry, route.
    let (status, body) = app.get("/jobs/AAAAAAAAAAAAAAAAAAAAAA").await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(
        body["error"]["message"],
        "job 'AAAAAAAAAAAAAAAAAAAAAA' not found"
    );
    let (status, body) = app.get("/jobs/not-a-job-id").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get("/history/AAAAAAAAAAAAAAAAAAAAAA").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app
        .post_json(
            "/jobs/AAAAAAAAAAAAAAAAAAAAAA",
            &json!({"status": "aborted"}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app
        .post_json(
            "/jobs/AAAAAAAAAAAAAAAAAAAAAA",
            &json!({"b57caaac4e5b4444a4169ce784a35201": null}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get("/no/such/route").await;
    assert_error(status, &body, 404, "not_found");
    // 405: a known path with the wrong method.
    let (status, body) = raw(&app, reqwest::Method::DELETE, "/jobs", None, Vec::new()).await;
    assert_error(status, &body, 405, "method_not_allowed");
    // 413: a body over the limit.
    let big = vec![b' '; 5 * 1024 * 1024];
    let (status, body) = raw(&app, reqwest::Method::POST, "/jobs", json, big).await;
    assert_error(status, &body, 413, "payload_too_large");

    // 409: the job is already active; the id comes back in the same form as on 201.
    let file = json!({"hash": "dup", "machine_id": demo::MACHINE_ID, "file_name": "f"});
    let created = app.send(Method::POST, "/jobs", Some(&file), None).await;
    assert_eq!(created.status().as_u16(), 201);
    assert!(
        created.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let id = created.text().await.expect("id");
    let again = app.send(Method::POST, "/jobs", Some(&file), None).await;
    assert_eq!(again.status().as_u16(), 409);
    assert_eq!(again.text().await.expect("id"), id);
    let again = app
        .send(Method::POST, "/jobs", Some(&file), Some("application/json"))
        .await;
    assert_eq!(again.status().as_u16(), 409);
    assert_eq!(
        again.json::<Value>().await.expect("json"),
        json!({"id": id})
    );

    // 422: a task id that was not issued for the job, or not a task id at all, or a bad status.
    let (status, body) = app
        .post_json(
            &format!("/jobs/{id}"),
            &json!({"b57caaac4e5b4444a4169ce784a35201": {"a": "b"}}),
        )
        .await;
    assert_error(status, &body, 422, "unprocessable");
    let (status, body) = app
        .post_json(&format!("/jobs/{id}"), &json!({"not-a-task": {}}))
        .await;
    assert_error(status, &body, 422, "unprocessable");
    let (status, body) = app
        .post_json(&format!("/jobs/{id}"), &json!({"status": "finished"}))
        .await;
    assert_error(status, &body, 422, "unprocessable");
    let (status, body) = app.post_json(&format!("/jobs/{id}"), &json!({})).await;
    assert_error(status, &body, 422, "unprocessable");
    app.cleanup().await;
}

#[tokio::test]
async fn invalid_pipelines_and_machines_are_refused_with_the_path_of_the_problem() {
    let app = spawn_app().await;
    let mut pipeline = demo::pipeline_body();
    pipeline["stages"][1]["input_map"]["input_csv"] = json!("04:nothing");
    let (status, body) = app.post_json("/pipelines", &pipeline).await;
    assert_error(status, &body, 422, "unprocessable");
    assert_eq!(body["error"]["path"], "$.stages[1].input_map.input_csv");

    let mut pipeline = demo::pipeline_body();
    pipeline["stages"][0]["worker"]["id"] = json!("bad id#");
    let (status, body) = app.post_json("/pipelines", &pipeline).await;
    assert_error(status, &body, 422, "unprocessable");
    assert_eq!(body["error"]["path"], "$.stages[0].worker.id");

    let (status, body) = app
        .post_json("/pipelines", &json!({"name": "x", "stages": []}))
        .await;
    assert_error(status, &body, 422, "unprocessable");
    let (status, body) = app
        .post_json("/pipelines", &json!({"name": "x", "stages": "no"}))
        .await;
    assert_error(status, &body, 422, "unprocessable");

    // A valid pipeline: 201 with its id, then 409 for the same id, then it reads back with stage ids.
    let (status, body) = app.post_json("/pipelines", &demo::pipeline_body()).await;
    assert_eq!(status, 201, "{body}");
    let pipeline_id = body["id"].as_str().expect("id").to_owned();
    let mut same = demo::pipeline_body();
    same["id"] = json!(pipeline_id);
    let (status, body) = app.post_json("/pipelines", &same).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = app.get(&format!("/pipelines/{pipeline_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["stages"][3]["id"], "04");
    let (_, list) = app.get("/pipelines").await;
    assert!(list.as_array().expect("list").contains(&json!(pipeline_id)));

    // A machine needs a registered pipeline.
    let status = |r: reqwest::Response| r.status().as_u16();
    let machine = |pipeline: &str| json!({"pipeline_id": pipeline, "configs": {"delimiter": ";"}});
    let pipeline_path = format!("/pipelines/{pipeline_id}");
    let body = machine("missing");
    let put = app.send(Method::PUT, "/machines/m1", Some(&body), None);
    assert_eq!(status(put.await), 422);
    let body = machine(&pipeline_id);
    let put = app.send(Method::PUT, "/machines/m1", Some(&body), None);
    assert_eq!(status(put.await), 201);
    let (code, stored) = app.get("/machines/m1").await;
    assert_eq!(code, 200);
    assert_eq!(stored["configs"]["delimiter"], ";");
    // A pipeline in use cannot be deleted; a machine can, then the pipeline can.
    let delete = app.send(Method::DELETE, &pipeline_path, None, None);
    assert_eq!(status(delete.await), 409);
    let delete = app.send(Method::DELETE, "/machines/m1", None, None);
    assert_eq!(status(delete.await), 204);
    assert_eq!(app.get("/machines/m1").await.0, 404);
    let delete = app.send(Method::DELETE, &pipeline_path, None, None);
    assert_eq!(status(delete.await), 204);
    assert_eq!(app.get(&pipeline_path).await.0, 404);
    app.cleanup().await;
}

#[tokio::test]
async fn no_malformed_input_produces_a_server_error() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        b"{\"hash\": null, \"machine_id\": [], \"file_name\": {}}".to_vec(),
        vec![0xff, 0xfe, 0x00],
        b"{\"status\": \"aborted\", \"extra\": 1}".to_vec(),
        b"{\"$set\": {\"a\": 1}}".to_vec(),
        format!(
            "{{\"hash\": \"{}\", \"machine_id\": \"x\", \"file_name\": \"y\"}}",
            "h".repeat(100_000)
        )
        .into_bytes(),
        "[".repeat(10_000).into_bytes(),
    ];
    let paths = [
        "/jobs",
        "/jobs/AAAAAAAAAAAAAAAAAAAAAA",
        "/pipelines",
        "/pipelines/x",
        "/machines/m",
    ];
    for path in paths {
        for body in &bodies {
            for method in [reqwest::Method::POST, reqwest::Method::PUT] {
                let (status, reply) = raw(
                    &app,
                    method.clone(),
                    path,
                    Some("application/json"),
                    body.clone(),
                )
                .await;
                assert!(
                    (400..500).contains(&status),
                    "{method} {path} {:?} gave {status}",
                    String::from_utf8_lossy(&body[..body.len().min(40)])
                );
                assert!(
                    reply["error"]["code"].is_string(),
                    "{method} {path}: {reply}"
                );
            }
        }
    }
    let (status, _) = app.get("/health/ready").await;
    assert_eq!(status, 200);
    app.cleanup().await;
}
