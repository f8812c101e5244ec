//! Trust under hostile input (issue 10): secrets in `--help` and errors, security headers,
//! JSON for every rejection, base path checks, and the HTTP limits.

use std::time::{Duration, Instant};

use job_manager::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

async fn binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_job-manager"))
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), command)
        .await
        .expect("the binary ends within 30 s")
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn help_never_shows_a_password() {
    let env = [
        (
            "JOB_MANAGER_AMQP_URL",
            "amqp://jm:amqp-hunter2@rabbit:5672/jobs",
        ),
        (
            "JOB_MANAGER_MONGODB_URI",
            "mongodb://jm:mongo-hunter2@mongo:27017/",
        ),
        ("JOB_MANAGER_API_TOKEN", "token-hunter2-0123456789"),
        ("JOB_MANAGER_API_TOKENS", "read:tokens-hunter2-0123456789"),
    ];
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["demo", "--help"],
        &["jobs", "--help"],
    ] {
        let (ok, help) = binary(args, &env).await;
        assert!(ok, "{args:?}: {help}");
        assert!(
            !help.contains("hunter2"),
            "{args:?} shows a secret:\n{help}"
        );
        assert!(
            !help.contains("guest:guest"),
            "{args:?} shows the default password"
        );
    }
    let (_, help) = binary(&["serve", "--help"], &env).await;
    assert!(
        help.contains("JOB_MANAGER_AMQP_URL") && help.contains("guest:***@"),
        "{help}"
    );
}

#[tokio::test]
async fn an_unparsable_amqp_url_is_refused_without_its_password() {
    let mut config = Config::defaults();
    config.endpoints.amqp_url = "amqp:jm:amqp-hunter2@rabbit".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let error = job_manager::app::run(config, listener, CancellationToken::new())
        .await
        .expect_err("refused at start");
    let message = format!("{error:#}");
    assert!(message.contains("invalid AMQP URL"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

/// Serves `base_path` with both dependencies unreachable (so nothing is created anywhere) and
/// returns the address and the stop token.
async fn serve_offline(base_path: &str) -> (String, CancellationToken) {
    let mut config = Config::defaults();
    config.endpoints.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    config.endpoints.mongodb_uri = "mongodb://127.0.0.1:1".into();
    config.base_path = base_path.into();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    tokio::spawn(job_manager::app::run(config, listener, shutdown.clone()));
    (address, shutdown)
}

async fn live_status(client: &reqwest::Client, url: &str) -> u16 {
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(url).send().await {
            return response.status().as_u16();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url} never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn base_paths_are_checked_at_start_and_normalised() {
    for bad in ["job-manager", "/a//b", "/a/../b", "/{job}"] {
        let (ok, out) = binary(&["serve", "--base-path", bad], &[]).await;
        assert!(!ok, "{bad} was accepted");
        assert!(out.contains("base path"), "{bad}: {out}");
        assert!(!out.contains("panicked"), "{bad}: {out}");
        let (ok, out) = binary(&["serve"], &[("JOB_MANAGER_BASE_PATH", bad)]).await;
        assert!(
            !ok && out.contains("base path") && !out.contains("panicked"),
            "{out}"
        );
        let mut config = Config::defaults();
        config.base_path = bad.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let error = job_manager::app::run(config, listener, CancellationToken::new()).await;
        assert!(error.is_err_and(|e| e.to_string().contains("base path")));
    }
    let client = reqwest::Client::new();
    let (address, stop) = serve_offline("/jm/").await;
    assert_eq!(
        live_status(&client, &format!("{address}/jm/health/live")).await,
        200
    );
    stop.cancel();
    let (address, stop) = serve_offline("/").await;
    assert_eq!(
        live_status(&client, &format!("{address}/health/live")).await,
        200
    );
    stop.cancel();
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in [
        "/health/live",
        "/jobs",
        "/no/such/route",
        "/jobs/%FF",
        "/openapi.json",
    ] {
        let response = app.client.get(app.url(path)).send().await.expect("get");
        let headers = response.headers();
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        let policy = headers["content-security-policy"].to_str().expect("ascii");
        assert!(policy.starts_with("default-src 'none'"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
    }
    let response = app
        .client
        .get(app.url("/dashboard"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let page = response.text().await.expect("page");
    // The policy allows exactly the page it came with: its own inline script and style.
    assert_eq!(policy, job_manager::http::security::dashboard_policy(&page));
    for part in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        assert!(policy.contains(part), "{part} missing from {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    app.cleanup().await;
}

async fn raw_status(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, String, Value) {
    let mut request = app.client.request(method.clone(), app.url(path));
    if method == reqwest::Method::POST || method == reqwest::Method::PUT {
        request = request.json(&serde_json::json!({"pipeline_id": "p"}));
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    (
        status,
        content_type,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn undecodable_path_segments_and_queries_get_our_json_errors() {
    use reqwest::Method;
    let app = spawn_app().await;
    let cases = [
        (Method::GET, "/jobs/%FF"),
        (Method::GET, "/jobs/%C0%AE"),
        (Method::POST, "/jobs/%FF"),
        (Method::GET, "/history/%ED%A0%80"),
        (Method::GET, "/pipelines/%FF%FE"),
        (Method::PUT, "/pipelines/%C0%AE"),
        (Method::DELETE, "/pipelines/%80"),
        (Method::GET, "/machines/%F0%9F%98"),
        (Method::PUT, "/machines/%FF"),
        (Method::DELETE, "/machines/%C3"),
        (Method::GET, "/jobs?limit=%FF"),
        (Method::GET, "/jobs?limit=99999999999999999999"),
        (Method::GET, "/history?%FF=1"),
        (Method::GET, "/history?limit=1&limit=2"),
    ];
    for (method, path) in cases {
        let (status, content_type, body) = raw_status(&app, method.clone(), path).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}"
        );
        assert_eq!(
            body["error"]["code"], "bad_request",
            "{method} {path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    app.cleanup().await;
}

/// Opens a connection and sends a request head announcing a body it never finishes, so the
/// handler waits on it.
async fn stalled_post(app: &TestApp) -> TcpStream {
    let rest = app.base.strip_prefix("http://").expect("http");
    let (address, base_path) = rest.split_at(rest.find('/').expect("a base path"));
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST {base_path}/jobs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"hash\": "
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

fn assert_unavailable(status: u16, retry_after: Option<&str>, body: &Value, code: &str) {
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        retry_after.is_some_and(|s| s.parse::<u64>().is_ok()),
        "{retry_after:?}"
    );
}

#[tokio::test]
async fn requests_over_the_limit_get_503_with_retry_after_until_a_slot_frees() {
    let app = spawn_app_with(|config| config.max_requests = 1, true).await;
    // A streamed listing frees its slot once sent.
    for _ in 0..3 {
        let (status, body) = app.get("/jobs").await;
        assert_eq!(status, 200, "{body}");
    }
    let stalled = stalled_post(&app).await;
    let started = Instant::now();
    let (status, retry_after, body) = loop {
        let response = app
            .client
            .get(app.url("/health/live"))
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 || started.elapsed() > Duration::from_secs(10) {
            break (status, retry, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_unavailable(status, retry_after.as_deref(), &body, "overloaded");
    drop(stalled);
    let started = Instant::now();
    while app.get("/health/live").await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_a_json_503_and_a_silent_client_is_cut_off() {
    let app = spawn_app_with(|config| config.request_timeout_s = 1, true).await;
    let mut stalled = stalled_post(&app).await;
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(body["error"]["code"], "timeout", "{body}");

    // Headers that never end: the connection is closed after the request timeout.
    let rest = app.base.strip_prefix("http://").expect("http");
    let address = &rest[..rest.find('/').expect("a base path")];
    let mut trickle = TcpStream::connect(address).await.expect("connect");
    trickle
        .write_all(b"GET /job-manager/health/live HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), trickle.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a connection with unfinished headers stayed open"
    );
    app.cleanup().await;
}
