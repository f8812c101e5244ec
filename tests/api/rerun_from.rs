//! A rerun from a stage against the real servers: what it reuses, what it dispatches, and
//! what it refuses.

use std::time::Duration;

use job_manager::demo;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_schema, replica_of, spawn_app};

fn body(hash: &str, file: &str, from: &str) -> Value {
    json!({"hash": hash, "machine_id": demo::MACHINE_ID, "file_name": file, "from_stage": from})
}

async fn refused(app: &TestApp, body: &Value, path: &str) -> String {
    let (code, answer) = app.post_json("/jobs", body).await;
    assert_eq!(code, 422, "{body}: {answer}");
    assert_eq!(answer["error"]["path"], path, "{answer}");
    answer["error"]["message"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_rerun_from_03_reuses_01_and_02_and_dispatches_nothing_for_them() {
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    a.register_seed_pipeline().await;
    let hash = "rerun-from";
    let id = a.start_job_on(demo::MACHINE_ID, hash).await;
    a.answer_stage(&id, "01", json!({"csv_file": "c.csv"}))
        .await;
    a.answer_stage(&id, "02", json!({"output_csv": "o.csv"}))
        .await;
    a.wait_for_stage(&id, "03").await;
    let (code, _) = b
        .post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    assert_eq!(code, 202);
    let run_1 = a.wait_for_history(&id, Duration::from_secs(10)).await;
    let run_1_id = run_1["run_id"].as_str().expect("run").to_owned();
    let before = [
        a.queue_depth(&a.names.worker_queue("import-csv")).await,
        a.queue_depth(&a.names.worker_queue("trim-csv")).await,
    ];
    assert_eq!(before, [1, 1]);

    // What cannot be rerun, with the field at fault.
    let message = refused(&a, &body("never-ran", "f", "02"), "$.from_stage").await;
    assert!(message.contains("no earlier run"), "{message}");
    let message = refused(&a, &body(hash, "f", "04"), "$.from_stage").await;
    assert!(message.contains("stage '03'"), "{message}");
    refused(&a, &body(hash, "other-file", "03"), "$.file_name").await;
    refused(&a, &body(hash, "f", "init"), "$.from_stage").await;
    let mut latest = body(hash, "f", "03");
    latest["pipeline"] = json!("latest");
    refused(&a, &latest, "$.pipeline").await;

    // The rerun, on the other replica: same id, a new run that starts at 03.
    let rerun = body(hash, "f", "03");
    let response = b
        .send(
            reqwest::Method::POST,
            "/jobs",
            Some(&rerun),
            Some("application/json"),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let started: Value = response.json().await.expect("json");
    assert_eq!(started["id"], json!(id), "the same job id");
    let (code, _) = a.post_json("/jobs", &body(hash, "f", "03")).await;
    assert_eq!(code, 409, "the rerun is active");
    let job = a.wait_for_stage(&id, "03").await;
    assert_schema("job", &job);
    assert_ne!(job["run_id"], json!(run_1_id));
    for (n, stage) in ["01", "02"].iter().enumerate() {
        let reused = &job["stages"][n + 1];
        assert_eq!(
            (reused["id"].clone(), reused["reused_from"].clone()),
            (json!(stage), json!(run_1_id))
        );
        assert_eq!(reused["outputs"], run_1["stages"][n + 1]["outputs"]);
    }
    assert_eq!(
        job["current_stage"]["tasks"][0]["inputs"]["input_csv"],
        "o.csv"
    );
    let after = [
        a.queue_depth(&a.names.worker_queue("import-csv")).await,
        a.queue_depth(&a.names.worker_queue("trim-csv")).await,
    ];
    assert_eq!(after, before, "nothing dispatched for 01 and 02");
    assert_eq!(
        a.queue_depth(&a.names.worker_queue("split-by-sensor"))
            .await,
        2,
        "03 of each run"
    );

    let tables = json!([{"unique_id": "s1", "result_table": "t1"}]);
    b.answer_stage(&id, "03", tables).await;
    b.answer_stage(&id, "04", json!({})).await;
    let record = a
        .wait_for_history_of_run(&id, job["run_id"].as_str().expect("run"))
        .await;
    assert_schema("history-record", &record);
    assert_eq!(record["status"], "finished");
    assert_eq!(record["previous_runs"][0]["run_id"], json!(run_1_id));
    assert_eq!(record["stages"][1]["reused_from"], json!(run_1_id));
    b.stop().await;
    a.cleanup().await;
}

#[tokio::test]
async fn a_rerun_on_the_current_pipeline_needs_the_stages_before_it_to_do_the_same_work() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let hash = "rerun-current";
    let id = app.start_job_on(demo::MACHINE_ID, hash).await;
    app.answer_stage(&id, "01", json!({"csv_file": "c.csv"}))
        .await;
    app.answer_stage(&id, "02", json!({"output_csv": "o.csv"}))
        .await;
    let tables = json!([{"unique_id": "s1", "result_table": "t1"}]);
    app.answer_stage(&id, "03", tables).await;
    app.answer_stage(&id, "04", json!({})).await;
    app.wait_for_history(&id, Duration::from_secs(10)).await;

    // Stage 01 now splits on another delimiter: its outputs cannot be reused by the current
    // pipeline, though the earlier run's snapshot still can.
    let mut pipeline = demo::pipeline_body();
    pipeline["stages"][0]["worker"]["configs"]["delimiter"] = json!(";");
    let path = format!("/pipelines/{}", demo::PIPELINE_ID);
    let response = app
        .send(reqwest::Method::PUT, &path, Some(&pipeline), None)
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let mut current = body(hash, "f", "03");
    current["pipeline"] = json!("current");
    let message = refused(&app, &current, "$.pipeline").await;
    assert!(message.contains("stage '01'"), "{message}");
    let (code, _) = app.post_json("/jobs", &body(hash, "f", "03")).await;
    assert_eq!(code, 201, "the snapshot's stages are the earlier run's own");
    let job = app.wait_for_stage(&id, "03").await;
    assert_eq!(
        job["stages"][1]["reused_from"],
        job_run_of_previous(&app, &id).await
    );
    app.post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    app.wait_for_history_of_run(&id, job["run_id"].as_str().expect("run"))
        .await;

    // From 01 nothing is reused, so the current pipeline will do (from the command line).
    let args = ["rerun", id.as_str(), "--from", "01", "--current-pipeline"];
    let (ok, out, err) = crate::cli::cli(&app.url(""), &args).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("job {id} runs again from stage 01")),
        "{out}"
    );
    let (ok, _, err) = crate::cli::cli(&app.url(""), &args).await;
    assert!(!ok && err.contains("409"), "the rerun is active: {err}");
    let job = app.wait_for_stage(&id, "01").await;
    assert_eq!(
        job["stages"].as_array().map(Vec::len),
        Some(1),
        "only init: nothing reused"
    );
    app.post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    app.wait_for_history_of_run(&id, job["run_id"].as_str().expect("run"))
        .await;
    app.cleanup().await;
}

/// The run id of the latest ended run of job `id`.
async fn job_run_of_previous(app: &TestApp, id: &str) -> Value {
    let (_, record) = app.get(&format!("/history/{id}")).await;
    record["run_id"].clone()
}
