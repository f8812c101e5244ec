//! Hostile input on every route of the OpenAPI document: integers beyond 64 bits, 1e400, -0,
//! 1e-400, nesting from 10 to 100,000 levels, huge keys, invalid UTF-8 and NUL bytes in path
//! bytes, queries and JSON bodies. No answer may be a 5xx and every 4xx must carry our error
//! body. Requests go over a raw socket, so paths reach the server byte for byte (an HTTP
//! client would normalise `..` or refuse raw bytes); a raw non-ASCII byte in the request line
//! is refused by hyper's parser with a bare 400, the one 4xx the service cannot shape. The
//! sweep is deterministic; every failure is collected and printed before the test fails, so
//! one run lists them all.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, spawn_app};

/// A raw HTTP/1.1 answer.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole answer.
async fn send(app: &TestApp, method: &str, target: &[u8], body: Option<&[u8]>) -> Answer {
    let rest = app.base.strip_prefix("http://").expect("http base");
    let (address, base_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut request = format!("{method} {base_path}").into_bytes();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body.unwrap_or_default());
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(&request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("an answer within 30 s")
    .expect("read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.get(split + 4..).unwrap_or_default().to_vec();
    Answer { status, head, body }
}

/// Collects what went wrong instead of stopping at the first.
#[derive(Default)]
struct Sweep {
    requests: usize,
    failures: Vec<String>,
}

impl Sweep {
    async fn check(&mut self, app: &TestApp, method: &str, target: &[u8], body: Option<&[u8]>) {
        self.requests += 1;
        let answer = send(app, method, target, body).await;
        let shown = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
            format!("{text:?}{}", if bytes.len() > 80 { "…" } else { "" })
        };
        let what = format!(
            "{method} {} body {} → {}",
            shown(target),
            body.map_or("none".into(), shown),
            answer.status
        );
        // A raw byte outside visible ASCII in the request line is not HTTP: hyper answers 400
        // (with an empty body) before any route runs, and the service never sees it.
        let parsable = target.iter().all(u8::is_ascii_graphic);
        if answer.status >= 500 || answer.status < 100 || (!parsable && answer.status != 400) {
            self.failures
                .push(format!("{what}: {}", shown(&answer.body)));
        } else if answer.status >= 400 && parsable {
            let json_type = answer
                .head
                .to_ascii_lowercase()
                .contains("content-type: application/json");
            let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
            let well_formed = parsed.as_ref().is_some_and(|v| {
                v["error"]["code"].is_string() && v["error"]["message"].is_string()
            });
            if !json_type || !well_formed {
                self.failures.push(format!(
                    "{what} without our error body: {} {}",
                    answer.head.replace("\r\n", " | "),
                    shown(&answer.body)
                ));
            }
        }
    }
}

/// JSON texts, most of them hostile and some not JSON at all.
fn values() -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = [
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1e400",
        "-1e400",
        "1e-400",
        "-0",
        "-0.0",
        "[9223372036854775808]",
        "{\"deep\": {\"n\": 18446744073709551615}}",
        "\"a\\u0000b\"",
        "{\"a\\u0000b\": 1}",
        "{\"\\u0000\": 1}",
        "{\"$where\": 1}",
        "{\"a.b\": 1}",
        "\"\\ud800\"",
        "null",
    ]
    .iter()
    .map(|v| v.as_bytes().to_vec())
    .collect();
    for depth in [10, 32, 33, 100, 128, 129, 1_000, 100_000] {
        values.push(format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
        values.push(format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes());
    }
    for size in [257, 100_000, 3 * 1024 * 1024] {
        values.push(format!("{{\"{}\": 1}}", "k".repeat(size)).into_bytes());
    }
    values.push(b"\"\xff\xfe\"".to_vec());
    values.push(b"{\"\xc0\xae\": 1}".to_vec());
    values.push(b"\"a\x00b\"".to_vec());
    values.push(b"\xff".to_vec());
    values
}

/// `template` with `value` spliced in for every `@` (a JSON text, possibly not JSON).
fn splice(template: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in template.split('@').enumerate() {
        if i > 0 {
            out.extend_from_slice(value);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn pipeline(worker: &str) -> Value {
    json!({"name": "hostile", "stages": [{"worker": {"id": worker, "name": "w",
        "input": {"type": "single", "fields": [{"name": "file"}]},
        "output": {"type": "single", "fields": [{"name": "out"}]}},
        "input_map": {"file": "init:init_source"}}]})
}

/// Bytes that a path segment or query value may carry.
const SEGMENTS: [&[u8]; 14] = [
    b"%FF",
    b"%C0%AE",
    b"%C0%AE%C0%AE",
    b"%00",
    b"a%00b",
    b"%2e%2e",
    b"..",
    b"%2F",
    b"%F0%9F%98",
    b"%ED%A0%80",
    b"\xff",
    b"AAAAAAAAAAAAAAAAAAAAAA",
    b"%25",
    b"%",
];

/// Each payload as a task's outputs, on a job of its own, so that it is the first result of
/// its task and reaches the store.
async fn sweep_results(app: &TestApp, sweep: &mut Sweep, values: &[Vec<u8>]) {
    for (n, value) in values.iter().enumerate() {
        for shape in [
            "{\"@task\": @}",
            "{\"@task\": {\"out\": @}}",
            "{\"@task\": [{\"out\": @}]}",
        ] {
            let job = app
                .start_job_on("hostile-machine", &format!("h{n}-{}", shape.len()))
                .await;
            let record = app.wait_for_stage(&job, "01").await;
            let task = record["current_stage"]["tasks"][0]["task_id"]
                .as_str()
                .expect("a task id");
            let body = splice(&shape.replace("@task", task), value);
            sweep
                .check(app, "POST", format!("/jobs/{job}").as_bytes(), Some(&body))
                .await;
        }
    }
}

/// Every payload in every body of every write route.
async fn sweep_bodies(app: &TestApp, sweep: &mut Sweep, values: &[Vec<u8>], pipeline_id: &str) {
    let job = app.start_job_on("hostile-machine", "h-bodies").await;
    let machine = format!("{{\"pipeline_id\": \"{pipeline_id}\", \"configs\": {{\"k\": @}}}}");
    let stage_configs = pipeline("hostile-worker").to_string().replacen(
        "\"name\":\"w\"",
        "\"name\":\"w\",\"configs\":{\"k\":@}",
        1,
    );
    let new_job = |field: &str| {
        let mut body = json!({"hash": "h", "machine_id": "hostile-machine", "file_name": "f"});
        body[field] = json!("@");
        body.to_string().replace("\"@\"", "@")
    };
    let writes: Vec<(&str, String, Vec<String>)> = vec![
        (
            "POST",
            "/jobs".into(),
            vec!["@".into(), new_job("hash"), new_job("file_name")],
        ),
        (
            "POST",
            format!("/jobs/{job}"),
            vec!["@".into(), "{\"status\": @}".into(), "{@: 1}".into()],
        ),
        (
            "POST",
            "/pipelines".into(),
            vec![
                "@".into(),
                stage_configs.clone(),
                "{\"name\": @, \"stages\": []}".into(),
            ],
        ),
        (
            "PUT",
            "/pipelines/hostile-pipeline".into(),
            vec!["@".into(), stage_configs],
        ),
        (
            "PUT",
            "/machines/hostile-machine".into(),
            vec!["@".into(), machine, "{\"pipeline_id\": @}".into()],
        ),
    ];
    for (method, path, templates) in &writes {
        for template in templates {
            for value in values {
                let body = splice(template, value);
                sweep.check(app, method, path.as_bytes(), Some(&body)).await;
            }
        }
    }
}

/// Request targets for one path of the document: hostile segments in place of its parameter,
/// or after it and in its query when it has none.
fn targets(template: &str) -> Vec<Vec<u8>> {
    let with = |prefix: &str, segment: &[u8]| [prefix.as_bytes(), segment].concat();
    if let Some(open) = template.find('{') {
        let prefix = &template[..open];
        let mut targets: Vec<Vec<u8>> = SEGMENTS.iter().map(|s| with(prefix, s)).collect();
        targets.push(with(prefix, "A".repeat(10_000).as_bytes()));
        return targets;
    }
    let mut targets = vec![template.as_bytes().to_vec()];
    for segment in SEGMENTS {
        targets.push(with(&format!("{template}/"), segment));
        for query in ["limit=", "status=", "since=", "after=", "machine_id=", ""] {
            targets.push(with(&format!("{template}?{query}"), segment));
        }
    }
    for query in [
        "limit=9223372036854775808",
        "limit=-9223372036854775809",
        "limit=18446744073709551616",
        "limit=1e400",
        "limit=-0",
        "limit=1e-400",
        "limit=1&limit=2",
        "until=9999-99-99T99:99:99Z",
        &format!("machine_id={}", "m".repeat(10_000)),
    ] {
        targets.push(format!("{template}?{query}").into_bytes());
    }
    targets
}

/// Every route and method of the served OpenAPI document.
async fn sweep_routes(app: &TestApp, sweep: &mut Sweep) {
    let (status, document) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 12, "every route: {:?}", paths.keys());
    for (template, item) in paths {
        let methods = item.as_object().expect("a path item").keys();
        for method in methods.filter(|m| ["get", "post", "put", "delete"].contains(&m.as_str())) {
            let method = method.to_ascii_uppercase();
            let body = ["POST", "PUT"]
                .contains(&method.as_str())
                .then_some(&b"{}"[..]);
            for target in targets(template) {
                sweep.check(app, &method, &target, body).await;
            }
        }
    }
}

#[tokio::test]
async fn no_hostile_request_on_any_route_gets_a_server_error_or_a_non_json_error() {
    let app = spawn_app().await;
    let worker = pipeline("hostile-worker");
    let pipeline_id = app.register(&worker, "hostile-machine").await;
    let mut sweep = Sweep::default();
    let values = values();
    sweep_results(&app, &mut sweep, &values).await;
    sweep_bodies(&app, &mut sweep, &values, &pipeline_id).await;
    sweep_routes(&app, &mut sweep).await;

    let (status, _) = app.get("/health/ready").await;
    assert_eq!(status, 200, "the service is still ready after the sweep");
    assert!(sweep.requests > 1_500, "{} requests", sweep.requests);
    assert!(
        sweep.failures.is_empty(),
        "{} of {} hostile requests failed:\n{}",
        sweep.failures.len(),
        sweep.requests,
        sweep.failures.join("\n")
    );
    app.cleanup().await;
}
