//! The OpenAPI 3.1 document of the API, rendered from the route table (`routes.rs`), and the
//! route that serves it (docs/protocol.md, "REST surface"). `schemas/openapi.json` is the
//! committed copy; `crate::schemas` fails a test when it drifts.

use std::sync::Arc;

use axum::{Extension, Json};
use schemars::SchemaGenerator;
use serde_json::{Map, Value, json};

use super::error::ErrorBody;
use super::routes::{ApiRoute, Documented};
use crate::openapi::{Operation, Response, generator, schema_of};

/// `GET /openapi.json`.
pub fn routes() -> Vec<ApiRoute> {
    fn object(_: &mut SchemaGenerator) -> Value {
        json!({"type": "object"})
    }
    vec![
        ApiRoute::public("/openapi.json").get(
            Operation::new("openapi", "this document")
                .response(200, Response::new("OpenAPI 3.1").json(object)),
            serve,
        ),
    ]
}

/// The document, put into every request's extensions by the router.
async fn serve(Extension(document): Extension<Arc<Value>>) -> Json<Value> {
    Json(document.as_ref().clone())
}

/// The whole document for `documented`, with `base_path` as the server URL.
pub fn document(base_path: &str, documented: &Documented) -> Value {
    let mut generator = generator();
    let mut paths = Map::new();
    for (path, item) in documented {
        let item = item.render(&mut generator, schema_of::<ErrorBody>);
        paths.insert((*path).to_owned(), item);
    }
    let mut schemas = Value::Object(generator.take_definitions(true));
    crate::access::hideable_task_ids(&mut schemas);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "job-manager", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Starts, lists, inspects and aborts jobs that run a machine's pipeline on one file."},
        "servers": [{"url": base_path}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "only when access control is configured; `read` may GET, `write` may also POST, PUT and DELETE"}}
        },
        "security": [{"bearer": []}, {}]
    })
}
