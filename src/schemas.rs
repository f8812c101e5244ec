//! JSON Schemas (draft 2020-12) of every message and body, generated from the Rust types
//! (docs/protocol.md, "Messages"; docs/scaling.md, "Adding a field to the job record").
//! `schemas/` holds the committed copies, with the OpenAPI document of the REST API
//! (`crate::http::document`); a test fails when any of them drifts from the code.

use schemars::JsonSchema;
use serde_json::Value;

use crate::access::hideable_task_ids;
use crate::domain::changes::JobChange;
use crate::domain::{JobView, MachineBody, NewJobBody, PipelineBody};
use crate::http::bodies::StatusChange;
use crate::http::error::ErrorBody;
use crate::messages::{JobCleanup, JobEvent, StageDispatch, StageResult};
use crate::services::HistoryView;

fn schema<T: JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

fn job_response<T: JsonSchema>() -> Value {
    let mut schema = schema::<T>();
    hideable_task_ids(&mut schema["$defs"]);
    schema
}

/// Every schema, as `(file name, schema)`.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("new-job.schema.json", schema::<NewJobBody>()),
        ("job.schema.json", job_response::<JobView>()),
        ("history-record.schema.json", job_response::<HistoryView>()),
        ("id-list.schema.json", schema::<Vec<String>>()),
        ("status-change.schema.json", schema::<StatusChange>()),
        ("pipeline.schema.json", schema::<PipelineBody>()),
        ("machine.schema.json", schema::<MachineBody>()),
        ("error.schema.json", schema::<ErrorBody>()),
        ("stage-dispatch.schema.json", schema::<StageDispatch>()),
        ("stage-result.schema.json", schema::<StageResult>()),
        ("job-event.schema.json", schema::<JobEvent>()),
        ("job-change.schema.json", schema::<JobChange>()),
        ("job-cleanup.schema.json", schema::<JobCleanup>()),
    ]
}

/// The text written to `schemas/<name>`.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Run with `UPDATE_SCHEMAS=1` to rewrite `schemas/` after changing a wire type.
    #[test]
    fn committed_schemas_match_the_code() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        for (name, schema) in all() {
            let path = dir.join(name);
            let expected = render(&schema);
            if update {
                std::fs::create_dir_all(&dir).expect("create schemas/");
                std::fs::write(&path, &expected).expect("write schema");
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!("schemas/{name} is missing; run UPDATE_SCHEMAS=1 cargo test")
            });
            assert_eq!(
                committed, expected,
                "schemas/{name} drifted; run UPDATE_SCHEMAS=1 cargo test"
            );
        }
    }

    /// Run with `UPDATE_SCHEMAS=1` to rewrite `schemas/openapi.json`.
    #[test]
    fn committed_openapi_matches_the_code() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi.json");
        let expected = render(&crate::http::document("/job-manager"));
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

    #[test]
    fn job_responses_do_not_require_task_ids() {
        let schema = job_response::<JobView>();
        let required = schema["$defs"]["TaskRecord"]["required"]
            .as_array()
            .expect("required");
        assert!(!required.contains(&Value::from("task_id")), "{required:?}");
        assert!(required.contains(&Value::from("status")), "{required:?}");
    }

    #[test]
    fn the_result_schema_requires_the_ids() {
        let schema = schema::<StageResult>();
        let required = schema["required"].as_array().expect("required");
        assert!(required.contains(&Value::from("task_id")));
        assert!(required.contains(&Value::from("job_id")));
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }
}
