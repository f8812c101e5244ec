//! The OpenAPI 3.1 document of the REST API, built from the same types the handlers use.
//! `GET /openapi.json` serves it; `schemas/openapi.json` is the committed copy.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::domain::{JobView, Machine, MachineBody, NewJobBody, PipelineBody};
use crate::http::bodies::{AbortAccepted, HealthBody, IdBody, PipelineView, ResultAccepted};
use crate::http::error::ErrorBody;
use crate::messages::outputs_schema;
use crate::services::HistoryView;

struct Builder {
    generator: SchemaGenerator,
}

impl Builder {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    fn json(&mut self, schema: Value) -> Value {
        json!({"application/json": {"schema": schema}})
    }

    fn body<T: JsonSchema>(&mut self) -> Value {
        let schema = self.schema::<T>();
        json!({"required": true, "content": self.json(schema)})
    }

    fn ok<T: JsonSchema>(&mut self, description: &str) -> Value {
        let schema = self.schema::<T>();
        json!({"description": description, "content": self.json(schema)})
    }

    fn errors(&mut self, codes: &[(u16, &str)]) -> Map<String, Value> {
        let schema = self.schema::<ErrorBody>();
        let mut map = Map::new();
        for (code, description) in codes {
            map.insert(
                code.to_string(),
                json!({"description": description, "content": self.json(schema.clone())}),
            );
        }
        map.insert(
            "503".into(),
            json!({"description": "MongoDB or RabbitMQ is unavailable; retry later", "content": self.json(schema)}),
        );
        map
    }

    fn responses(&mut self, success: &[(u16, Value)], codes: &[(u16, &str)]) -> Value {
        let mut map = self.errors(codes);
        for (code, response) in success {
            map.insert(code.to_string(), response.clone());
        }
        Value::Object(map)
    }
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
           "schema": {"type": "string", "minLength": 1, "maxLength": 200}})
}

fn listing_params() -> Value {
    let query = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema});
    json!([
        query(
            "status",
            "comma-separated statuses: pending, running, finished, failed, aborted",
            json!({"type": "string"})
        ),
        query(
            "machine_id",
            "only jobs of this machine",
            json!({"type": "string", "maxLength": 1024})
        ),
        query(
            "pipeline_id",
            "only jobs of this pipeline",
            json!({"type": "string", "maxLength": 1024})
        ),
        query(
            "since",
            "created at or after (RFC 3339)",
            json!({"type": "string", "format": "date-time"})
        ),
        query(
            "until",
            "created before (RFC 3339)",
            json!({"type": "string", "format": "date-time"})
        ),
        query(
            "limit",
            "page size; without it every id is returned in one streamed array",
            json!({"type": "integer", "minimum": 1, "maximum": crate::http::listing::MAX_PAGE})
        ),
        query(
            "after",
            "the cursor from the previous page's Link header",
            json!({"type": "string"})
        ),
    ])
}

/// Body of `POST /jobs/{job}`: an abort, or results keyed by task id.
fn job_update_schema(b: &mut Builder) -> Value {
    let outputs = outputs_schema(&mut b.generator).to_value();
    json!({"oneOf": [
        {"type": "object", "required": ["status"], "additionalProperties": false,
         "properties": {"status": {"const": "aborted"}}},
        {"type": "object", "minProperties": 1,
         "propertyNames": {"pattern": "^[0-9a-f]{32}$"},
         "additionalProperties": outputs}
    ]})
}

/// The whole document, with `base_path` as the server URL.
pub fn document(base_path: &str) -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut b = Builder {
        generator: settings.into_generator(),
    };
    let ids = json!({"type": "array", "items": {"type": "string"}});
    let ids_ok = json!({"description": "job ids, newest first", "content": {"application/json": {"schema": ids}},
        "headers": {"Link": {"description": "with `limit`: `<…&after=…>; rel=\"next\"` when more follow",
                             "schema": {"type": "string"}}}});
    let id_body = b.schema::<IdBody>();
    let created_id = json!({"description": "the job id, as text or as {\"id\"} when Accept asks for JSON only",
        "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": id_body.clone()}}});
    let conflict_id = json!({"description": "that job is already active; its id, in the same form",
        "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": id_body}}});
    let job_update = job_update_schema(&mut b);
    let result_accepted = b.schema::<ResultAccepted>();
    let abort_accepted = b.schema::<AbortAccepted>();
    let accepted = json!({"description": "recorded, already recorded, or ignored for an ended job; or aborted",
        "content": {"application/json": {"schema": {"oneOf": [result_accepted, abort_accepted]}}}});

    let read_errors: &[(u16, &str)] = &[
        (400, "bad query"),
        (401, "missing or invalid token"),
        (403, "token may not do this"),
    ];
    let body_errors: &[(u16, &str)] = &[
        (400, "malformed JSON"),
        (401, "missing or invalid token"),
        (403, "token may not do this"),
        (413, "body over 4 MiB"),
        (415, "not application/json"),
        (422, "invalid body"),
    ];
    let with = |base: &[(u16, &'static str)],
                extra: &[(u16, &'static str)]|
     -> Vec<(u16, &'static str)> { base.iter().chain(extra).copied().collect() };

    let ok_0 = b.ok::<JobView>("the job record");
    let ok_1 = b.ok::<HistoryView>("the archived record");
    let ok_2 = b.ok::<IdBody>("registered");
    let ok_3 = b.ok::<PipelineView>("the pipeline");
    let ok_4 = b.ok::<IdBody>("replaced");
    let ok_5 = b.ok::<IdBody>("created");
    let ok_6 = b.ok::<Machine>("the machine");
    let ok_7 = b.ok::<Machine>("replaced");
    let ok_8 = b.ok::<Machine>("created");
    let ok_9 = b.ok::<HealthBody>("live");
    let ok_10 = b.ok::<HealthBody>("ready");
    let ok_11 = b.ok::<HealthBody>("not ready");
    let paths = json!({
        "/jobs": {
            "get": {"operationId": "listJobs", "summary": "ids of pending and running jobs",
                    "parameters": listing_params(),
                    "responses": b.responses(&[(200, ids_ok.clone())], read_errors)},
            "post": {"operationId": "startJob", "summary": "start a job",
                     "requestBody": b.body::<NewJobBody>(),
                     "responses": b.responses(&[(201, created_id), (409, conflict_id)], body_errors)}
        },
        "/jobs/{job}": {
            "parameters": [path_param("job", "the 22-character job id")],
            "get": {"operationId": "getJob", "summary": "a running job",
                    "responses": b.responses(&[(200, ok_0.clone())], &with(read_errors, &[(404, "no such active job")]))},
            "post": {"operationId": "updateJob", "summary": "record results ({\"<task_id>\": outputs}) or abort ({\"status\": \"aborted\"})",
                     "requestBody": {"required": true, "content": {"application/json": {"schema": job_update}}},
                     "responses": b.responses(&[(202, accepted)], &with(body_errors, &[(404, "no such job"), (409, "the job already ended (abort)")]))}
        },
        "/history": {
            "get": {"operationId": "listHistory", "summary": "ids of ended jobs",
                    "parameters": listing_params(),
                    "responses": b.responses(&[(200, ids_ok)], read_errors)}
        },
        "/history/{job}": {
            "parameters": [path_param("job", "the 22-character job id")],
            "get": {"operationId": "getHistory", "summary": "an ended job",
                    "responses": b.responses(&[(200, ok_1.clone())], &with(read_errors, &[(404, "no such job in history")]))}
        },
        "/pipelines": {
            "get": {"operationId": "listPipelines", "summary": "ids of registered pipelines",
                    "responses": b.responses(&[(200, json!({"description": "pipeline ids", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}}))], read_errors)},
            "post": {"operationId": "createPipeline", "summary": "register a pipeline",
                     "requestBody": b.body::<PipelineBody>(),
                     "responses": b.responses(&[(201, ok_2.clone())], &with(body_errors, &[(409, "a pipeline with this id exists")]))}
        },
        "/pipelines/{id}": {
            "parameters": [path_param("id", "the pipeline id")],
            "get": {"operationId": "getPipeline", "summary": "a pipeline with its stage ids",
                    "responses": b.responses(&[(200, ok_3.clone())], &with(read_errors, &[(404, "no such pipeline")]))},
            "put": {"operationId": "putPipeline", "summary": "create or replace a pipeline",
                    "requestBody": b.body::<PipelineBody>(),
                    "responses": b.responses(&[(200, ok_4.clone()), (201, ok_5.clone())], body_errors)},
            "delete": {"operationId": "deletePipeline", "summary": "delete a pipeline no machine uses",
                       "responses": b.responses(&[(204, json!({"description": "deleted"}))], &with(read_errors, &[(404, "no such pipeline"), (409, "a machine uses it")]))}
        },
        "/machines/{machine_id}": {
            "parameters": [path_param("machine_id", "the machine id")],
            "get": {"operationId": "getMachine", "summary": "a machine",
                    "responses": b.responses(&[(200, ok_6.clone())], &with(read_errors, &[(404, "no such machine")]))},
            "put": {"operationId": "putMachine", "summary": "create or replace a machine",
                    "requestBody": b.body::<MachineBody>(),
                    "responses": b.responses(&[(200, ok_7.clone()), (201, ok_8.clone())], body_errors)},
            "delete": {"operationId": "deleteMachine", "summary": "delete a machine",
                       "responses": b.responses(&[(204, json!({"description": "deleted"}))], &with(read_errors, &[(404, "no such machine")]))}
        },
        "/health/live": {
            "get": {"operationId": "live", "summary": "the process serves", "security": [],
                    "responses": {"200": ok_9.clone()}}
        },
        "/health/ready": {
            "get": {"operationId": "ready", "summary": "MongoDB and RabbitMQ answer", "security": [],
                    "responses": {"200": ok_10.clone(), "503": ok_11.clone()}}
        },
        "/dashboard": {
            "get": {"operationId": "dashboard", "summary": "the dashboard page", "security": [],
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}
        },
        "/metrics": {
            "get": {"operationId": "metrics", "summary": "Prometheus metrics", "security": [],
                    "responses": {"200": {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}}}
        },
        "/openapi.json": {
            "get": {"operationId": "openapi", "summary": "this document", "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}
        }
    });
    let mut schemas = Value::Object(b.generator.take_definitions(true));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ref_resolves_to_a_component() {
        let document = document("/job-manager");
        let text = document.to_string();
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("schemas");
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().expect("name");
            assert!(schemas.contains_key(name), "unresolved $ref to {name}");
        }
        assert!(!text.contains("#/$defs/"), "a $ref escaped to $defs");
    }

    #[test]
    fn every_operation_answers_errors_as_json() {
        let document = document("/job-manager");
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                if method == "parameters"
                    || path.starts_with("/health")
                    || path == "/openapi.json"
                    || path == "/metrics"
                    || path == "/dashboard"
                {
                    continue;
                }
                let responses = operation["responses"].as_object().expect("responses");
                assert!(responses.contains_key("503"), "{method} {path}");
                assert!(
                    responses.keys().any(|code| code.starts_with('4')),
                    "{method} {path}"
                );
            }
        }
    }

    /// Run with `UPDATE_SCHEMAS=1` to rewrite `schemas/openapi.json`.
    #[test]
    fn committed_openapi_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi.json");
        let expected = crate::schemas::render(&document("/job-manager"));
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &expected).expect("write");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed, expected,
            "schemas/openapi.json drifted; run UPDATE_SCHEMAS=1 cargo test"
        );
    }
}
