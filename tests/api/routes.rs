//! The router answers exactly the routes of the OpenAPI document it serves: every documented
//! method of every documented path reaches its handler, every other method on those paths is
//! a 405, and paths the document does not list fall through to the 404 `no route`. Both come
//! from one route table (`src/http/routes.rs`), so this fails if either side drifts.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// The methods probed on every path (HEAD and OPTIONS follow GET in axum).
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// `template` with every `{param}` replaced by an id nothing has.
fn fill(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "no-such-id"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The status and the error code and message, when the body is our error body.
async fn probe(app: &TestApp, method: Method, path: &str) -> (u16, String, String) {
    let body = [Method::POST, Method::PUT, Method::PATCH]
        .contains(&method)
        .then(|| json!({}));
    let response = app.send(method, path, body.as_ref(), None).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let text = |key: &str| body["error"][key].as_str().unwrap_or("").to_owned();
    (status, text("code"), text("message"))
}

#[tokio::test]
async fn the_router_answers_exactly_the_documented_routes() {
    let app = spawn_app().await;
    let (status, document) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 12, "{:?}", paths.keys());
    let mut routed = 0;
    for (template, item) in paths {
        let path = fill(template);
        for method in METHODS {
            let documented = item.get(method.as_str().to_ascii_lowercase()).is_some();
            let (status, code, message) = probe(&app, method.clone(), &path).await;
            if documented {
                routed += 1;
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                assert!(
                    !message.starts_with("no route"),
                    "{method} {path} is documented but fell through: {message}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is routed but not documented");
                assert_eq!(code, "method_not_allowed", "{method} {path}");
            }
        }
    }
    assert_eq!(routed, 20, "every documented operation was probed");
    for path in [
        "/",
        "/jobs/",
        "/health",
        "/jobs/no-such-id/tasks",
        "/history/a/b",
    ] {
        let (status, code, message) = probe(&app, Method::GET, path).await;
        assert_eq!(status, 404, "{path} is routed but not documented");
        assert_eq!(code, "not_found", "{path}");
        assert!(message.starts_with("no route"), "{path}: {message}");
    }
    app.cleanup().await;
}
