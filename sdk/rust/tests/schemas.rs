//! The crate's wire types against the committed JSON Schemas (`schemas/` at the repository's
//! top), so they cannot drift from what the coordinator sends and accepts.

use std::collections::BTreeSet;
use std::path::Path;

use job_manager_worker::wire::{Dispatch, JobEvent, StageResult};
use serde_json::{Value, json};

fn schema(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path).expect("the committed schema");
    serde_json::from_str(&text).expect("a JSON schema")
}

fn assert_valid(name: &str, value: &Value) {
    let schema = schema(name);
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value}");
}

fn properties(name: &str) -> BTreeSet<String> {
    schema(name)["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect()
}

fn required(name: &str) -> BTreeSet<String> {
    schema(name)["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|k| k.as_str().expect("a key").to_owned())
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// The example of docs/protocol.md.
fn dispatch() -> Value {
    json!({"task_id": "b57caaac4e5b4444a4169ce784a35201", "job_id": "UVpxMTeqgMijLlbmNI8A_A",
           "run_id": "0f6d2c1e9a8b4c7d8e9f0a1b2c3d4e5f",
           "machine_id": "735d39eb6dc94acdadc9d019ff54fb1f",
           "pipeline_id": "a34f4ba9-13ad-4ab5-a7e8-d23157513466",
           "stage_id": "01", "worker": {"id": "trim-csv", "name": "Trim CSV"},
           "inputs": {"input_csv": "49423bf25a104ce0929adb519926bfcd"}, "configs": {"delimiter": ";"},
           "attempt": 1, "deadline": "2020-07-16T11:15:53.278087Z"})
}

#[test]
fn a_dispatch_the_schema_accepts_parses_whole_into_the_crates_type() {
    let sent = dispatch();
    assert_valid("stage-dispatch", &sent);
    let parsed: Dispatch = serde_json::from_value(sent.clone()).expect("parses");
    assert_eq!(parsed.task_id, "b57caaac4e5b4444a4169ce784a35201");
    assert_eq!(parsed.worker.id, "trim-csv");
    assert_eq!(
        parsed.inputs["input_csv"],
        "49423bf25a104ce0929adb519926bfcd"
    );
    // Nothing is lost on the way in, and the type knows every field the schema has.
    let again = serde_json::to_value(&parsed).expect("serialises");
    assert_eq!(again, sent);
    assert_eq!(keys(&again), properties("stage-dispatch"));
    assert_eq!(required("stage-dispatch"), properties("stage-dispatch"));
}

#[test]
fn a_dispatch_missing_a_required_field_is_refused_by_both() {
    for field in required("stage-dispatch") {
        let mut sent = dispatch();
        sent.as_object_mut().expect("object").remove(&field);
        assert!(
            serde_json::from_value::<Dispatch>(sent).is_err(),
            "the type took a dispatch without '{field}'"
        );
    }
}

#[test]
fn the_results_a_worker_sends_satisfy_the_schema() {
    let base = StageResult {
        task_id: "b57caaac4e5b4444a4169ce784a35201".into(),
        job_id: "UVpxMTeqgMijLlbmNI8A_A".into(),
        run_id: Some("0f6d2c1e9a8b4c7d8e9f0a1b2c3d4e5f".into()),
        outputs: json!({"csv_file": "49423bf25a104ce0929adb519926bfcd"}),
        log: Some("optional text".into()),
        error: None,
    };
    let failed = StageResult {
        outputs: Value::Null,
        error: Some("worker error".into()),
        log: None,
        run_id: None,
        ..base.clone()
    };
    let listed = StageResult {
        outputs: json!([{"a": 1}, null]),
        ..base.clone()
    };
    let schema_keys = properties("stage-result");
    for result in [base, failed, listed] {
        let sent = serde_json::to_value(&result).expect("serialises");
        assert_valid("stage-result", &sent);
        assert!(keys(&sent).is_subset(&schema_keys), "{sent}");
        assert!(required("stage-result").is_subset(&keys(&sent)), "{sent}");
        let back: StageResult = serde_json::from_value(sent).expect("parses back");
        assert_eq!(back, result);
    }
    // The type covers every field the schema has, so none can be added unseen.
    let full = json!({"task_id": "b57caaac4e5b4444a4169ce784a35201",
                      "job_id": "UVpxMTeqgMijLlbmNI8A_A", "run_id": "r",
                      "outputs": null, "log": "l", "error": "e"});
    assert_eq!(keys(&full), schema_keys);
    let parsed: StageResult = serde_json::from_value(full.clone()).expect("parses");
    assert_eq!(serde_json::to_value(parsed).expect("serialises"), full);
}

#[test]
fn an_abort_event_the_schema_accepts_parses() {
    let event = json!({"job_id": "UVpxMTeqgMijLlbmNI8A_A", "run_id": "0f6d2c1e9a8b4c7d8e9f0a1b2c3d4e5f",
                       "status": "aborted", "stage_id": null, "at": "2020-07-16T11:15:53.278087Z"});
    assert_valid("job-event", &event);
    let parsed: JobEvent = serde_json::from_value(event).expect("parses");
    assert_eq!(parsed.status, "aborted");
    assert_eq!(
        parsed.run_id.as_deref(),
        Some("0f6d2c1e9a8b4c7d8e9f0a1b2c3d4e5f")
    );
    let fields: BTreeSet<String> = ["job_id", "run_id", "status"].map(String::from).into();
    assert!(fields.is_subset(&properties("job-event")));
}
