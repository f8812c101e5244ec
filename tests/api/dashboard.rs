//! The dashboard in headless Chromium: what the page shows while a job runs.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// Runs headless Chromium on `url` with `extra` flags; returns what it printed.
async fn chromium(url: &str, extra: &[&str]) -> String {
    let profile =
        std::env::temp_dir().join(format!("jm-chromium-{}", uuid::Uuid::new_v4().simple()));
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect(
            "Chromium is needed for the dashboard test: scripts/test.sh installs Debian's chromium",
        );
    let mut command = tokio::process::Command::new(binary);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--virtual-time-budget=5000",
    ]);
    command
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("chromium finished in time")
        .expect("chromium ran");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn job_page(app: &TestApp, id: &str) -> String {
    chromium(&app.url(&format!("/dashboard#job={id}")), &["--dump-dom"]).await
}

async fn answer_stage(app: &TestApp, id: &str, stage: &str, outputs: Value) {
    let record = app.wait_for_stage(id, stage).await;
    for task in record["current_stage"]["tasks"].as_array().expect("tasks") {
        let task_id = task["task_id"].as_str().expect("task id");
        let (status, body) = app
            .post_json(&format!("/jobs/{id}"), &json!({ task_id: outputs.clone() }))
            .await;
        assert_eq!(status, 202, "{body}");
    }
}

#[tokio::test]
async fn the_dashboard_shows_a_job_advance_through_its_stages() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let id = app.start_job("dashboard").await;
    app.wait_for_stage(&id, "01").await;

    let list = chromium(&app.url("/dashboard"), &["--dump-dom"]).await;
    assert!(list.contains("Active jobs"), "{list}");
    assert!(
        list.contains(&format!("data-job=\"{id}\"")),
        "the active job is listed"
    );

    let page = job_page(&app, &id).await;
    assert!(
        page.contains("id=\"job-status\" class=\"status running\""),
        "{page}"
    );
    assert!(page.contains("data-stage=\"init\" data-state=\"done\""));
    assert!(
        page.contains("data-stage=\"01\" data-state=\"running\""),
        "{page}"
    );
    assert!(page.contains("data-stage=\"04\" data-state=\"waiting\""));
    assert!(
        page.contains("Split by sensor"),
        "stage names come from the pipeline"
    );
    assert!(
        page.contains("id=\"abort\""),
        "a running job offers an abort button"
    );

    answer_stage(&app, &id, "01", json!({"csv_file": "c"})).await;
    answer_stage(&app, &id, "02", json!({"output_csv": "o"})).await;
    let tables: Vec<Value> = (1..=3)
        .map(|n| json!({"unique_id": format!("s{n}"), "result_table": format!("t{n}")}))
        .collect();
    answer_stage(&app, &id, "03", Value::Array(tables)).await;
    app.wait_for_stage(&id, "04").await;
    let page = job_page(&app, &id).await;
    assert!(
        page.contains("data-stage=\"01\" data-state=\"done\""),
        "{page}"
    );
    assert!(page.contains("data-stage=\"03\" data-state=\"done\""));
    assert!(page.contains("data-stage=\"04\" data-state=\"running\""));
    assert_eq!(
        page.matches("class=\"task running\"").count(),
        3,
        "stage 04 shows its three tasks"
    );

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &app.url(&format!("/dashboard#job={id}")),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,800",
            "--hide-scrollbars",
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_dashboard_reports_a_missing_token_when_access_control_is_on() {
    let app = spawn_app_with(
        |config| config.api_tokens = Some("read:read-token-0123456789".into()),
        true,
    )
    .await;
    let page = chromium(&app.url("/dashboard"), &["--dump-dom"]).await;
    assert!(page.contains("401: a bearer token is required"), "{page}");
    app.cleanup().await;
}
