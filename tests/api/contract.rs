//! The contract: schemas of real messages and responses, the OpenAPI document, listings,
//! access control and input limits.

use std::time::Duration;

use job_manager::amqp::publisher::{Outgoing, Publisher};
use job_manager::demo;
use job_manager::messages::{StageDispatch, WorkerRef};
use job_manager_worker::{Task, Worker};
use lapin::BasicProperties;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{assert_schema, spawn_app, spawn_app_with};

#[tokio::test]
async fn real_messages_and_responses_match_the_committed_schemas() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let events = app.listen_events("#").await;
    let id = app.start_job("schemas").await;
    let message = app
        .take(
            &app.names.worker_queue("import-csv"),
            Duration::from_secs(10),
        )
        .await
        .expect("dispatch");
    let dispatch: Value = serde_json::from_slice(&message.delivery.data).expect("json");
    assert_schema("stage-dispatch", &dispatch);

    let (_, active) = app.get("/jobs").await;
    assert_schema("id-list", &active);
    let running = app.wait_for_stage(&id, "01").await;
    assert_schema("job", &running);
    let task_id = running["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("task")
        .to_owned();
    let (status, _) = app
        .post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    assert_eq!(status, 202);
    let record = app.wait_for_history(&id, Duration::from_secs(10)).await;
    assert_schema("history-record", &record);
    let (_, history) = app.get("/history").await;
    assert_schema("id-list", &history);
    while let Some(event) = app.take(&events, Duration::from_millis(300)).await {
        let event: Value = serde_json::from_slice(&event.delivery.data).expect("json");
        assert_schema("job-event", &event);
    }
    for (method, path) in [
        (Method::GET, "/jobs/AAAAAAAAAAAAAAAAAAAAAA"),
        (Method::DELETE, "/jobs"),
    ] {
        let response = app.send(method, path, None, None).await;
        assert_schema("error", &response.json::<Value>().await.expect("json"));
    }
    let (_, error) = app
        .post_json(&format!("/jobs/{id}"), &json!({ task_id: null, "x": 1 }))
        .await;
    assert_schema("error", &error);

    // The Rust worker crate's stage-result, taken from a reply queue of the test's own.
    let reply = format!("{}.test-replies", app.names.prefix());
    let channel = app.amqp.create_channel().await.expect("channel");
    channel
        .queue_declare(
            reply.clone().into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("declare");
    let stop = CancellationToken::new();
    let sdk_worker = Worker::new("contract-worker", |task: Task| async move {
        task.log("done");
        Ok::<_, String>(json!([{"a": 1}, null]))
    })
    .prefix(app.names.prefix());
    let worker = tokio::spawn({
        let (amqp, stop) = (app.amqp.clone(), stop.clone());
        async move { sdk_worker.run(&amqp, stop.cancelled_owned()).await }
    });
    let dispatch = StageDispatch {
        worker: WorkerRef {
            id: "contract-worker".into(),
            name: "Contract".into(),
        },
        ..serde_json::from_value(dispatch).expect("dispatch")
    };
    let mut outgoing = Outgoing::json(
        app.names.dispatch_exchange(),
        "contract-worker",
        "stage-dispatch",
        &dispatch,
    )
    .expect("encode");
    outgoing.properties = BasicProperties::default()
        .with_reply_to(reply.clone().into())
        .with_delivery_mode(2);
    let publisher = Publisher::open(&app.amqp).await.expect("publisher");
    // Declare the queue here too (as any worker may), so the dispatch cannot go unrouted
    // before the worker has declared it.
    job_manager::amqp::topology::declare_worker_queue(&channel, &app.names, "contract-worker")
        .await
        .expect("declare the worker queue");
    publisher.publish(outgoing).await.expect("publish");
    let result = app
        .take(&reply, Duration::from_secs(10))
        .await
        .expect("a stage-result");
    let properties = &result.delivery.properties;
    assert_eq!(
        properties.kind().as_ref().map(|k| k.as_str()),
        Some("stage-result")
    );
    assert_eq!(
        properties.correlation_id().as_ref().map(|c| c.as_str()),
        Some(dispatch.task_id.as_str())
    );
    let result: Value = serde_json::from_slice(&result.delivery.data).expect("json");
    assert_schema("stage-result", &result);
    assert_eq!(result["outputs"], json!([{"a": 1}, null]));
    assert_eq!(result["log"], "done");
    stop.cancel();
    worker.await.expect("join").expect("worker stopped cleanly");
    let _ = channel
        .queue_delete(
            app.names.worker_queue("contract-worker").into(),
            Default::default(),
        )
        .await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = spawn_app().await;
    let (status, served) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let committed: Value =
        serde_json::from_str(include_str!("../../schemas/openapi.json")).expect("json");
    assert_eq!(served, committed);
    assert_eq!(served["openapi"], "3.1.0");
    app.cleanup().await;
}

#[tokio::test]
async fn listings_filter_page_and_stay_newest_first() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let other = app.register(&demo::pipeline_body(), "other-machine").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let machine = if n % 2 == 0 {
            demo::MACHINE_ID
        } else {
            "other-machine"
        };
        let body = json!({"hash": format!("list-{n}"), "machine_id": machine, "file_name": "f"});
        let response = app
            .send(Method::POST, "/jobs", Some(&body), Some("application/json"))
            .await;
        assert_eq!(response.status().as_u16(), 201);
        ids.push(
            response.json::<Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let newest_first: Vec<Value> = ids.iter().rev().map(|id| json!(id)).collect();
    let (_, all) = app.get("/jobs").await;
    assert_eq!(all, Value::Array(newest_first.clone()));

    // Pages of two, following the Link header.
    let mut seen = Vec::new();
    let mut next = Some("/jobs?limit=2".to_owned());
    while let Some(path) = next.take() {
        let response = app.send(Method::GET, &path, None, None).await;
        assert_eq!(response.status().as_u16(), 200);
        if let Some(link) = response.headers().get("link") {
            let link = link.to_str().expect("ascii");
            assert!(link.ends_with("rel=\"next\""), "{link}");
            let url = link.trim_start_matches('<').split('>').next().expect("url");
            next = Some(url.trim_start_matches("/job-manager").to_owned());
        }
        let page: Vec<Value> = response.json().await.expect("json");
        assert!(page.len() <= 2);
        seen.extend(page);
    }
    assert_eq!(seen, newest_first);

    // Filters.
    let (_, mine) = app
        .get(&format!("/jobs?machine_id={}", demo::MACHINE_ID))
        .await;
    assert_eq!(mine, json!([ids[4], ids[2], ids[0]]));
    let (_, by_pipeline) = app.get(&format!("/jobs?pipeline_id={other}")).await;
    assert_eq!(by_pipeline, json!([ids[3], ids[1]]));
    let (_, none) = app.get("/jobs?status=finished").await;
    assert_eq!(none, json!([]));
    let (_, future) = app.get("/jobs?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future, json!([]));
    let (_, past) = app.get("/jobs?until=2000-01-01T00:00:00Z").await;
    assert_eq!(past, json!([]));

    // History: abort two, then filter by status.
    for id in &ids[..2] {
        let (status, _) = app
            .post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
            .await;
        assert_eq!(status, 202);
        app.wait_for_history(id, Duration::from_secs(10)).await;
    }
    let (_, aborted) = app.get("/history?status=aborted").await;
    assert_eq!(aborted, json!([ids[1], ids[0]]));
    let (_, finished) = app.get("/history?status=finished").await;
    assert_eq!(finished, json!([]));
    let (_, active) = app.get("/jobs").await;
    assert_eq!(active.as_array().map(Vec::len), Some(3));

    // Bad parameters are 400 with a JSON body.
    for query in [
        "status=done",
        "limit=0",
        "limit=10001",
        "since=yesterday",
        "after=garbage",
        "colour=blue",
    ] {
        let (status, body) = app.get(&format!("/history?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn access_control_needs_a_token_and_the_right_role() {
    let read = "read-token-0123456789";
    let write = "write-token-0123456789";
    let app = spawn_app_with(
        |config| config.api_tokens = Some(format!("read:{read},write:{write}")),
        true,
    )
    .await;
    let request = |method: Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut request = app.client.request(method, app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let response = request(Method::GET, "/jobs", None, None)
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"]["code"],
        "unauthorized"
    );
    let response = request(Method::GET, "/jobs", Some("read-token-0123456780"), None)
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 401);
    let response = request(Method::GET, "/jobs", Some(read), None)
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 200);
    let pipeline = demo::pipeline_body();
    let response = request(
        Method::POST,
        "/pipelines",
        Some(read),
        Some(pipeline.clone()),
    )
    .await
    .expect("send");
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"]["code"],
        "forbidden"
    );
    let response = request(Method::POST, "/pipelines", Some(write), Some(pipeline))
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 201);
    let response = request(Method::DELETE, "/machines/x", Some(read), None)
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 403);
    // Health checks and the API description stay open.
    for path in ["/health/live", "/health/ready", "/openapi.json"] {
        let response = request(Method::GET, path, None, None).await.expect("send");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn input_limits_are_enforced_with_clear_reasons() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    // Over-long fields of a new job.
    let body = json!({"hash": "h".repeat(1025), "machine_id": demo::MACHINE_ID, "file_name": "f"});
    let (status, reply) = app.post_json("/jobs", &body).await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["error"]["path"], "$.hash");
    // A pipeline whose fan-out stage reads two multi-output stages.
    let mut pipeline = demo::pipeline_body();
    pipeline["stages"][1]["worker"]["output"]["type"] = json!("multiple");
    pipeline["stages"][3]["worker"]["input"]["fields"] =
        json!([{"name": "table"}, {"name": "sensor"}, {"name": "trimmed"}]);
    pipeline["stages"][3]["input_map"]["trimmed"] = json!("02:output_csv");
    let (status, reply) = app.post_json("/pipelines", &pipeline).await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["error"]["path"], "$.stages[3].input_map");
    // A result with more outputs than a task may return is refused over HTTP with the reason,
    // and the attempt stays open (over AMQP it fails the attempt: see the messages tests).
    let id = app.start_job("limits").await;
    let running = app.wait_for_stage(&id, "01").await;
    let task_id = running["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("task")
        .to_owned();
    let too_many = Value::Array(vec![json!({}); job_manager::messages::MAX_TASK_OUTPUTS + 1]);
    let (status, reply) = app
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ task_id.clone(): too_many }),
        )
        .await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["error"]["path"], format!("$.{task_id}"));
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|e| e.contains("at most 100000 outputs")),
        "{reply}"
    );
    let (_, record) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(
        record["current_stage"]["tasks"][0]["attempt"], 1,
        "{record}"
    );
    // A string value over the limit in a machine's configs.
    let configs = json!({"pipeline_id": demo::PIPELINE_ID, "configs": {"k": "x".repeat(70_000)}});
    let response = app
        .send(Method::PUT, "/machines/long", Some(&configs), None)
        .await;
    assert_eq!(response.status().as_u16(), 422);
    app.cleanup().await;
}

#[test]
#[should_panic(expected = "job-event")]
fn the_schema_check_refuses_a_wrong_message() {
    assert_schema("job-event", &json!({"job_id": 7, "status": "exploded"}));
}
