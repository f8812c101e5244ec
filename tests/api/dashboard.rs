//! The dashboard in headless Chromium: what the page shows while a job runs.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::{self, Browser};
use crate::helpers::{TestApp, silent_pipeline, spawn_app, spawn_app_with};

/// Runs headless Chromium on `url` with `extra` flags; returns what it printed.
async fn chromium(url: &str, extra: &[&str]) -> String {
    let profile =
        std::env::temp_dir().join(format!("jm-chromium-{}", uuid::Uuid::new_v4().simple()));
    let mut command = tokio::process::Command::new(browser::binary());
    command
        .args(browser::FLAGS)
        .arg("--virtual-time-budget=5000");
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

    app.answer_stage(&id, "01", json!({"csv_file": "c"})).await;
    app.answer_stage(&id, "02", json!({"output_csv": "o"}))
        .await;
    let tables: Vec<Value> = (1..=3)
        .map(|n| json!({"unique_id": format!("s{n}"), "result_table": format!("t{n}")}))
        .collect();
    app.answer_stage(&id, "03", Value::Array(tables)).await;
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

/// The job page's status, as shown.
const STATUS: &str = "(document.getElementById('job-status') || {}).textContent";

#[tokio::test]
async fn the_dashboard_pauses_resumes_and_releases_a_held_task() {
    let app = spawn_app().await;
    let mut pipeline = silent_pipeline("dash-held");
    pipeline["stages"][0]["on_failure"] = json!("hold");
    // Three attempts: the one in flight when the pause lands may time out before or after it.
    pipeline["stages"][0]["max_attempts"] = json!(3);
    app.register(&pipeline, "dash-machine").await;
    let id = app.start_job_on("dash-machine", "dash-held").await;
    let mut page = Browser::open(&app.url(&format!("/dashboard#job={id}"))).await;
    page.wait_for(&format!("{STATUS} === 'running'")).await;

    // Pause: the attempt in flight times out and its retry waits, queued.
    page.click("#pause").await;
    // The page follows the job's event stream, and does not poll while it is open: what it
    // shows next without a click (a retry queued by a timeout) came over the stream.
    page.wait_for("document.body.dataset.live === 'stream'")
        .await;
    page.wait_for(&format!("{STATUS} === 'paused'")).await;
    assert_eq!(app.get(&format!("/jobs/{id}")).await.1["status"], "paused");
    page.wait_for("document.querySelector('[data-task-status=queued]')")
        .await;
    assert_eq!(page.eval("document.body.dataset.live").await, "stream");
    let events = page
        .eval("Number(document.body.dataset.streamEvents)")
        .await;
    assert!(events.as_u64().is_some_and(|n| n >= 2), "{events}");
    let stage = page
        .eval("document.querySelector('[data-stage=\"01\"]').dataset.state + ' ' + document.querySelector('[data-stage=\"01\"]').textContent")
        .await;
    let stage = stage.as_str().expect("text");
    assert!(
        stage.starts_with("paused") && stage.contains("1 queued"),
        "{stage}"
    );
    assert_eq!(
        page.eval("!!document.getElementById('pause')").await,
        json!(false)
    );

    // Resume: the retry is dispatched, times out too, and the stage holds the job.
    page.click("#resume").await;
    page.wait_for(&format!("{STATUS} === 'held'")).await;
    let held = page
        .wait_for("document.querySelector('.skip') && document.querySelector('.skip').dataset.task")
        .await;
    let (_, job) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "held");
    assert_eq!(held, job["current_stage"]["tasks"][0]["task_id"]);
    let shown = page.eval("document.body.innerText").await;
    assert!(
        shown.as_str().is_some_and(|t| t.contains("holds the job")),
        "the reason is shown: {shown}"
    );
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-held.png");
    assert!(page.screenshot(&shot).await > 10_000);

    // Skip it with outputs typed into the page: the job finishes with them.
    page.eval("document.querySelector('.skip textarea').value = '[{\"out\": \"from the dashboard\"}]'; true")
        .await;
    page.click(".skip button").await;
    page.wait_for(&format!("{STATUS} === 'finished'")).await;
    let record = app.wait_for_history(&id, Duration::from_secs(10)).await;
    assert_eq!(record["stages"][1]["tasks"][0]["status"], "skipped");
    assert_eq!(
        record["stages"][1]["outputs"],
        json!([{"out": "from the dashboard"}])
    );
    page.close().await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_dashboard_reruns_an_ended_job_from_a_stage_and_shows_what_it_reused() {
    let app = spawn_app().await;
    app.register_seed_pipeline().await;
    let id = app.start_job("dashboard-rerun").await;
    app.answer_stage(&id, "01", json!({"csv_file": "c"})).await;
    app.answer_stage(&id, "02", json!({"output_csv": "o"}))
        .await;
    app.wait_for_stage(&id, "03").await;
    app.post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    let run_1 = app.wait_for_history(&id, Duration::from_secs(10)).await["run_id"].clone();

    let mut page = Browser::open(&app.url(&format!("/dashboard#job={id}"))).await;
    page.wait_for(&format!("{STATUS} === 'aborted'")).await;
    page.eval("document.getElementById('f-rerun-stage').value = '03'; true")
        .await;
    page.click("#f-rerun-button").await;
    page.wait_for(&format!("{STATUS} === 'running'")).await;
    let reused = page
        .wait_for("[...document.querySelectorAll('[data-reused]')].map((e) => e.dataset.reused).join(',')")
        .await;
    let run_1 = run_1.as_str().expect("a run id");
    assert_eq!(reused, json!(format!("{run_1},{run_1}")), "01 and 02");
    page.wait_for("document.querySelector('[data-stage=\"03\"]').dataset.state === 'running'")
        .await;
    let (_, job) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(job["stages"][2]["reused_from"], run_1);
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-rerun.png");
    assert!(page.screenshot(&shot).await > 10_000);
    page.close().await;
    app.cleanup().await;
}
