//! The operator commands of the binary against a running service.

use std::time::Duration;

use crate::helpers::{silent_pipeline, spawn_app};

pub async fn cli(base: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_job-manager"))
        .args(args)
        .env("JOB_MANAGER_API_URL", base)
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `job-manager job <id> --watch` running, its output read as it comes.
struct Watcher {
    child: tokio::process::Child,
    shown: std::sync::Arc<std::sync::Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(base: &str, id: &str) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_job-manager"))
            .args(["job", id, "--watch"])
            .env("JOB_MANAGER_API_URL", base)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary runs");
        let stdout = child.stdout.take().expect("stdout");
        let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = shown.clone();
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut shown) = into.lock() {
                    shown.push_str(&line);
                    shown.push('\n');
                }
            }
        });
        Self {
            child,
            shown,
            reader,
        }
    }

    fn text(&self) -> String {
        self.shown.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits (at most 10 s) until the watcher printed `text`.
    async fn wait_for(&mut self, text: &str) {
        let started = std::time::Instant::now();
        while !self.text().contains(text) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the watcher never printed {text:?}: {}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most 10 s) for the watcher to end; its exit status and everything it printed.
    async fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the watch ends with the job")
            .expect("waited");
        let shown = self.shown.clone();
        let _ = self.reader.await;
        let text = shown.lock().map(|s| s.clone()).unwrap_or_default();
        (status, text)
    }
}

#[tokio::test]
async fn operators_apply_pipelines_set_machines_and_follow_and_abort_jobs() {
    let app = spawn_app().await;
    let base = app.url("");
    let dir = std::env::temp_dir().join(format!("jm-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let yaml = dir.join("pipeline.yaml");
    std::fs::write(
        &yaml,
        "id: cli-pipeline\nname: from yaml\nstages:\n  - worker:\n      id: cli-worker\n      name: CLI worker\n      input: {type: single, fields: [{name: file}]}\n      output: {type: single, fields: [{name: out}]}\n    input_map: {file: 'init:init_source'}\n",
    )
    .expect("write");
    let path = yaml.to_str().expect("utf-8");

    let (ok, out, err) = cli(&base, &["pipelines", "apply", path]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "created pipeline cli-pipeline");
    let (ok, out, _) = cli(&base, &["pipelines", "apply", path]).await;
    assert!(ok);
    assert_eq!(out.trim(), "replaced pipeline cli-pipeline");
    let (ok, out, err) = cli(
        &base,
        &[
            "machines",
            "set",
            "cli-machine",
            "--pipeline",
            "cli-pipeline",
            "--configs",
            "{\"k\": 1}",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("created machine cli-machine"), "{out}");

    let body = serde_json::json!({"hash": "h", "machine_id": "cli-machine", "file_name": "f"});
    let (status, _) = app.post_json("/jobs", &body).await;
    assert_eq!(status, 201);
    let (_, ids) = app.get("/jobs").await;
    let id = ids[0].as_str().expect("id").to_owned();
    app.wait_for_stage(&id, "01").await;

    let (ok, out, _) = cli(&base, &["jobs", "--machine", "cli-machine"]).await;
    assert!(ok);
    assert!(out.contains(&id) && out.contains("running"), "{out}");
    let (ok, out, _) = cli(&base, &["job", &id]).await;
    assert!(ok);
    assert!(
        out.contains("01    running") && out.contains("1 pending"),
        "{out}"
    );
    // `job --watch` follows the job's event stream until it ends.
    let mut watcher = Watcher::start(&base, &id);
    watcher.wait_for("01    running").await;
    let (ok, out, err) = cli(&base, &["pause", &id]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("job {id} is paused"));
    let (ok, out, _) = cli(&base, &["job", &id]).await;
    assert!(ok && out.contains("01    paused"), "{out}");
    // Seen by the watcher before the resume (a pause and a resume between two of its reads
    // would be no change at all).
    watcher.wait_for("01    paused").await;
    let (ok, out, err) = cli(&base, &["resume", &id]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("job {id} is running"));
    // A task still running cannot be skipped: its outputs would be its result.
    let (_, job) = app.get(&format!("/jobs/{id}")).await;
    let running = job["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("a task")
        .to_owned();
    let (ok, _, err) = cli(&base, &["skip", &id, &running, "--outputs", "[{}]"]).await;
    assert!(!ok && err.contains("is pending, not held"), "{err}");
    let (ok, out, err) = cli(&base, &["abort", &id]).await;
    assert!(ok, "{err}");
    assert!(
        err.contains("aborting") && err.contains("done"),
        "progress is shown: {err}"
    );
    assert!(out.contains("aborted"), "{out}");
    let (status, shown) = watcher.finish().await;
    let views: Vec<&str> = shown.split("---\n").collect();
    assert!(status.success(), "{shown}");
    assert!(views.len() >= 3, "a view per change: {shown}");
    assert!(views.iter().any(|v| v.contains("01    paused")), "{shown}");
    assert!(
        views.last().is_some_and(|v| v.contains("aborted")),
        "{shown}"
    );
    let (ok, out, _) = cli(&base, &["history", "--status", "aborted"]).await;
    assert!(ok);
    assert!(out.contains(&id), "{out}");

    // Errors carry the API's message and a failing exit status.
    let (ok, _, err) = cli(&base, &["machines", "set", "m2", "--pipeline", "missing"]).await;
    assert!(!ok);
    assert!(
        err.contains("422") && err.contains("not registered"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.cleanup().await;
}

#[tokio::test]
async fn operators_see_a_held_task_and_skip_it_with_outputs() {
    let app = spawn_app().await;
    let base = app.url("");
    let mut pipeline = silent_pipeline("cli-held");
    pipeline["stages"][0]["on_failure"] = serde_json::json!("hold");
    pipeline["stages"][0]["max_attempts"] = serde_json::json!(1);
    app.register(&pipeline, "cli-held-machine").await;
    let id = app.start_job_on("cli-held-machine", "cli-held").await;
    let started = std::time::Instant::now();
    let task_id = loop {
        let (_, job) = app.get(&format!("/jobs/{id}")).await;
        if job["status"] == "held" {
            break job["current_stage"]["tasks"][0]["task_id"]
                .as_str()
                .expect("id")
                .to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never held: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (ok, out, _) = cli(&base, &["job", &id]).await;
    assert!(ok);
    assert!(
        out.contains("01    held") && out.contains(&format!("held task {task_id}: timed out")),
        "{out}"
    );
    let outputs = "[{\"out\": \"by the operator\"}]";
    let (ok, out, err) = cli(&base, &["skip", &id, &task_id, "--outputs", outputs]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("task {task_id}: recorded"));
    let record = app.wait_for_history(&id, Duration::from_secs(10)).await;
    assert_eq!(record["status"], "finished");
    assert_eq!(record["stages"][1]["outputs"][0]["out"], "by the operator");
    let (ok, _, err) = cli(&base, &["skip", &id, &task_id, "--outputs", "not json"]).await;
    assert!(!ok && err.contains("--outputs must be JSON"), "{err}");
    let (ok, _, err) = cli(&base, &["skip", &id, &task_id, "--outputs", "[]"]).await;
    assert!(
        !ok && err.contains("404"),
        "an ended job has no task to skip: {err}"
    );
    app.cleanup().await;
}
