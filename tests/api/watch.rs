//! Watching a job from any replica: the event stream (SSE) and the long poll.

use std::time::{Duration, Instant};

use job_manager::demo;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_schema, replica_of, spawn_app};

/// A job's event stream as a client reads it.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(app: &TestApp, id: &str) -> Self {
        let response = app
            .client
            .get(app.url(&format!("/jobs/{id}/events")))
            .send()
            .await
            .expect("the stream opens");
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (name and data), or `None` when the stream ended; at most 10 s.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_owned))
                };
                // A keep-alive comment has no event.
                if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                    let data: Value = serde_json::from_str(&data).expect("JSON data");
                    assert_schema("job-change", &data);
                    assert_eq!(data["event"], event.as_str());
                    return Some((event, data));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("a chunk")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event, which must be `event` (with `stage` when given).
    async fn expect(&mut self, event: &str, stage: Option<&str>) -> Value {
        let (name, data) = self.next().await.expect("the stream goes on");
        assert_eq!(name, event, "{data}");
        if let Some(stage) = stage {
            assert_eq!(data["stage_id"], stage, "{data}");
        }
        data
    }
}

#[tokio::test]
async fn a_replica_that_did_not_start_the_job_streams_its_transitions_until_it_ends() {
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    a.register_seed_pipeline().await;
    let id = a.start_job_on(demo::MACHINE_ID, "watched").await;
    let running = a.wait_for_stage(&id, "01").await;
    let task_id = running["current_stage"]["tasks"][0]["task_id"]
        .as_str()
        .expect("task")
        .to_owned();

    let mut stream = Stream::open(&b, &id).await;
    let first = stream.expect("status", Some("01")).await;
    assert_eq!(
        (first["status"].clone(), first["job_id"].clone()),
        (json!("running"), json!(id))
    );

    let (code, _) = a
        .post_json(
            &format!("/jobs/{id}"),
            &json!({ task_id.clone(): {"csv_file": "c"} }),
        )
        .await;
    assert_eq!(code, 202);
    let recorded = stream.expect("result.recorded", Some("01")).await;
    assert_eq!(
        (recorded["task_id"].clone(), recorded["task_status"].clone()),
        (json!(task_id), json!("done"))
    );
    stream.expect("stage.completed", Some("01")).await;
    assert_eq!(stream.expect("stage.started", Some("02")).await["tasks"], 1);

    let (code, _) = a
        .post_json(&format!("/jobs/{id}"), &json!({"status": "paused"}))
        .await;
    assert_eq!(code, 202);
    assert_eq!(stream.expect("status", None).await["status"], "paused");
    let (code, _) = a
        .post_json(&format!("/jobs/{id}"), &json!({"status": "aborted"}))
        .await;
    assert_eq!(code, 202);
    stream.expect("stage.completed", Some("02")).await;
    let last = stream.expect("status", None).await;
    assert_eq!(
        (last["status"].clone(), last["error"].clone()),
        (json!("aborted"), json!("aborted by request"))
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends with the job"
    );

    // Connected after the end: the final status at once, then the end.
    let mut late = Stream::open(&a, &id).await;
    assert_eq!(late.expect("status", None).await["status"], "aborted");
    assert!(late.next().await.is_none());
    let (code, body) = b.get("/jobs/AAAAAAAAAAAAAAAAAAAAAA/events").await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    b.stop().await;
    a.cleanup().await;
}

#[tokio::test]
async fn a_long_poll_answers_when_the_job_ends_or_the_time_is_up() {
    let a = spawn_app().await;
    let b = replica_of(&a).await;
    a.register_seed_pipeline().await;
    let id = a.start_job_on(demo::MACHINE_ID, "polled").await;
    a.wait_for_stage(&id, "01").await;

    let started = Instant::now();
    let (code, job) = b.get(&format!("/jobs/{id}?wait=1")).await;
    assert_eq!((code, job["status"].clone()), (200, json!("running")));
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );

    let aborter = {
        let (client, url) = (a.client.clone(), a.url(&format!("/jobs/{id}")));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            client
                .post(url)
                .json(&json!({"status": "aborted"}))
                .send()
                .await
                .expect("abort")
        })
    };
    let started = Instant::now();
    let (code, job) = b.get(&format!("/jobs/{id}?wait=20")).await;
    assert_eq!(
        (code, job["status"].clone()),
        (200, json!("aborted")),
        "{job}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered when the job ended"
    );
    assert_schema("job", &job);
    assert_eq!(aborter.await.expect("aborted").status().as_u16(), 202);
    // Without wait, an ended job is not active: the seed's 404.
    assert_eq!(b.get(&format!("/jobs/{id}")).await.0, 404);

    let (code, body) = b.get(&format!("/jobs/{id}?wait=soon")).await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (400, json!("bad_request")),
        "{body}"
    );
    let (code, _) = b.get("/jobs/AAAAAAAAAAAAAAAAAAAAAA?wait=5").await;
    assert_eq!(code, 404);
    b.stop().await;
    a.cleanup().await;
}
