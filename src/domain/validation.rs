//! The checks a pipeline passes at registration (docs/semantics.md, "Input mapping",
//! "Fan-out and fan-in" and "Where each rule lives"): names, worker ids and limits of each
//! stage on its own, then that every input mapping points at a declared output of an earlier
//! stage and that no stage takes inputs from more than one multi-output stage. Every problem
//! comes with the JSON path of the offending value in the body.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::pipeline::{
    IoSpec, IoType, MAX_ATTEMPTS_LIMIT, MAX_CONFIGS_BYTES, MAX_DESCRIPTION_LEN, MAX_FIELDS,
    MAX_NAME_LEN, MAX_STAGES, MAX_TIMEOUT_S, SourceRef, StageSpec, WorkerSpec, parse_source,
};

/// A value of a request that breaks a rule: what is wrong, and the JSON path of the value in
/// the body (`$.stages[1].input_map.x`). The path is empty when the value is not in the body,
/// such as a machine id taken from the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

pub(super) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path: path.into(),
        message: message.into(),
    }
}

/// True when `id` can be used as an AMQP routing key and queue-name suffix without surprises.
pub fn is_safe_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
        && !id.ends_with('.')
}

/// Checks a name, an id or a field name: not blank, no control characters, not too long.
pub(super) fn check_name(path: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(path, "must not contain control characters"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(
            path,
            format!("must be at most {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

fn check_fields(path: &str, io: &IoSpec) -> Result<(), ValidationError> {
    if io.fields.len() > MAX_FIELDS {
        return Err(invalid(
            format!("{path}.fields"),
            format!("at most {MAX_FIELDS} fields"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, field) in io.fields.iter().enumerate() {
        let field_path = format!("{path}.fields[{i}].name");
        check_name(&field_path, &field.name)?;
        if field.name.starts_with('$') || field.name.contains('.') {
            return Err(invalid(
                field_path,
                "must not start with '$' or contain '.'",
            ));
        }
        if !seen.insert(field.name.as_str()) {
            return Err(invalid(field_path, "is declared twice"));
        }
    }
    Ok(())
}

/// Checks a stage's worker: a safe id, a name, well-formed input and output fields.
fn check_worker(path: &str, worker: &WorkerSpec) -> Result<(), ValidationError> {
    if !is_safe_worker_id(&worker.id) {
        return Err(invalid(
            format!("{path}.worker.id"),
            "must be 1-100 characters of A-Z a-z 0-9 - _ . and not start or end with '.'",
        ));
    }
    check_name(&format!("{path}.worker.name"), &worker.name)?;
    check_fields(&format!("{path}.worker.input"), &worker.input)?;
    check_fields(&format!("{path}.worker.output"), &worker.output)
}

/// Checks one stage on its own: its worker, then the limits, then that every input field has
/// a source.
fn check_stage(path: &str, stage: &StageSpec) -> Result<(), ValidationError> {
    let worker = &stage.worker;
    check_worker(path, worker)?;
    if stage
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
    {
        return Err(invalid(
            format!("{path}.description"),
            format!("must be at most {MAX_DESCRIPTION_LEN} bytes"),
        ));
    }
    if configs_too_large(&worker.configs) {
        return Err(invalid(
            format!("{path}.worker.configs"),
            format!("must be at most {MAX_CONFIGS_BYTES} bytes as JSON"),
        ));
    }
    if stage.max_attempts == Some(0) || stage.max_attempts > Some(MAX_ATTEMPTS_LIMIT) {
        return Err(invalid(
            format!("{path}.max_attempts"),
            format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
        ));
    }
    if stage.timeout_s == Some(0) || stage.timeout_s > Some(MAX_TIMEOUT_S) {
        return Err(invalid(
            format!("{path}.timeout_s"),
            format!("must be between 1 and {MAX_TIMEOUT_S}"),
        ));
    }
    for field in &worker.input.fields {
        if !stage.input_map.contains_key(&field.name) {
            return Err(invalid(
                format!("{path}.input_map"),
                format!("input field '{}' has no source", field.name),
            ));
        }
    }
    Ok(())
}

/// True when `configs` is larger than [`MAX_CONFIGS_BYTES`] as JSON.
pub fn configs_too_large(configs: &Map<String, Value>) -> bool {
    serde_json::to_vec(configs).map_or(true, |bytes| bytes.len() > MAX_CONFIGS_BYTES)
}

/// Checks one `input_map` entry of the stage at `index`; returns where it points.
fn check_mapping(
    stages: &[StageSpec],
    index: usize,
    input: &str,
    source: &str,
) -> Result<SourceRef, ValidationError> {
    let path = format!("$.stages[{index}].input_map.{input}");
    check_name(&path, input)?;
    let worker = &stages[index].worker;
    if !worker.input.fields.iter().any(|f| f.name == input) {
        return Err(invalid(
            path,
            format!(
                "input field '{input}' is not declared by worker '{}'",
                worker.id
            ),
        ));
    }
    let source = parse_source(index, source).map_err(|m| invalid(&path, m))?;
    match source.stage.index() {
        None if source.field != "init_source" => Err(invalid(
            path,
            "the init stage only has the output 'init_source'",
        )),
        None => Ok(source),
        Some(src) if src >= index => Err(invalid(
            path,
            format!("stage '{}' does not come before this stage", source.stage),
        )),
        Some(src)
            if !stages[src]
                .worker
                .output
                .fields
                .iter()
                .any(|f| f.name == source.field) =>
        {
            Err(invalid(
                path,
                format!(
                    "stage '{}' does not declare the output '{}'",
                    source.stage, source.field
                ),
            ))
        }
        Some(_) => Ok(source),
    }
}

/// Checks a pipeline's stages: names, worker ids, limits, that every input mapping points at a
/// declared output of an earlier stage (or `init:init_source`), and that no stage takes inputs
/// from more than one multi-output stage.
///
/// A stage has several outputs when its worker's output type is `multiple`, or when it fans out
/// (`single` input) over a stage that has several outputs.
pub fn validate_stages(stages: &[StageSpec]) -> Result<(), ValidationError> {
    if stages.is_empty() {
        return Err(invalid("$.stages", "a pipeline needs at least one stage"));
    }
    if stages.len() > MAX_STAGES {
        return Err(invalid("$.stages", format!("at most {MAX_STAGES} stages")));
    }
    let mut multi_output = Vec::with_capacity(stages.len());
    for (index, stage) in stages.iter().enumerate() {
        let path = format!("$.stages[{index}]");
        check_stage(&path, stage)?;
        let mut multi_sources = BTreeSet::new();
        for (input, source) in &stage.input_map {
            let source = check_mapping(stages, index, input, source)?;
            if let Some(src) = source.stage.index()
                && multi_output.get(src) == Some(&true)
            {
                multi_sources.insert(source.stage);
            }
        }
        if multi_sources.len() > 1 {
            let kind = match stage.worker.input.kind {
                IoType::Single => "fan-out",
                IoType::Multiple => "fan-in",
            };
            let names: Vec<String> = multi_sources.iter().map(|s| format!("'{s}'")).collect();
            return Err(invalid(
                format!("{path}.input_map"),
                format!(
                    "a {kind} stage may take inputs from at most one multi-output stage, not {}",
                    names.join(" and ")
                ),
            ));
        }
        multi_output.push(
            stage.worker.output.kind == IoType::Multiple
                || (stage.worker.input.kind == IoType::Single && !multi_sources.is_empty()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pipeline::fixtures::*;
    use serde_json::Value;

    #[test]
    fn seed_pipeline_is_valid() {
        assert_eq!(validate_stages(&seed_pipeline().stages), Ok(()));
    }

    #[test]
    fn later_stage_reference_is_refused_with_its_path() {
        let mut stages = seed_pipeline().stages;
        stages[1]
            .input_map
            .insert("input_csv".into(), "03:result_table".into());
        let err = validate_stages(&stages).expect_err("refused");
        assert_eq!(err.path, "$.stages[1].input_map.input_csv");
    }

    #[test]
    fn undeclared_output_is_refused() {
        let mut stages = seed_pipeline().stages;
        stages[1]
            .input_map
            .insert("input_csv".into(), "01:nope".into());
        let err = validate_stages(&stages).expect_err("refused");
        assert!(err.message.contains("does not declare"), "{err}");
    }

    #[test]
    fn unsafe_worker_id_is_refused() {
        let mut stages = seed_pipeline().stages;
        stages[0].worker.id = "a b#".into();
        assert_eq!(
            validate_stages(&stages).expect_err("refused").path,
            "$.stages[0].worker.id"
        );
    }

    #[test]
    fn a_stage_with_two_multi_output_sources_is_refused() {
        use IoType::*;
        let stages = vec![
            stage(
                "a",
                (Single, &["f"]),
                (Multiple, &["x"]),
                &[("f", "init:init_source")],
            ),
            stage(
                "b",
                (Single, &["f"]),
                (Multiple, &["y"]),
                &[("f", "init:init_source")],
            ),
            stage(
                "c",
                (Single, &["x", "y"]),
                (Single, &["z"]),
                &[("x", "01:x"), ("y", "02:y")],
            ),
        ];
        let err = validate_stages(&stages).expect_err("refused");
        assert_eq!(err.path, "$.stages[2].input_map");
        assert!(err.message.contains("fan-out"), "{err}");
    }

    #[test]
    fn a_fan_out_stage_counts_as_multi_output_downstream() {
        use IoType::*;
        let stages = vec![
            stage(
                "a",
                (Single, &["f"]),
                (Multiple, &["x"]),
                &[("f", "init:init_source")],
            ),
            // Fans out over stage 01, so it has several outputs too.
            stage("b", (Single, &["x"]), (Single, &["y"]), &[("x", "x")]),
            stage(
                "c",
                (Multiple, &["x", "y"]),
                (Single, &["z"]),
                &[("x", "01:x"), ("y", "02:y")],
            ),
        ];
        let err = validate_stages(&stages).expect_err("refused");
        assert!(err.message.contains("fan-in"), "{err}");
        // One multi-output source plus single-output ones is fine.
        let ok = vec![
            stages[0].clone(),
            stage(
                "c",
                (Multiple, &["x", "s"]),
                (Single, &["z"]),
                &[("x", "01:x"), ("s", "init:init_source")],
            ),
        ];
        assert_eq!(validate_stages(&ok), Ok(()));
    }

    #[test]
    fn limits_are_enforced_with_paths() {
        let mut stages = seed_pipeline().stages;
        stages[0].timeout_s = Some(0);
        assert_eq!(
            validate_stages(&stages).expect_err("refused").path,
            "$.stages[0].timeout_s"
        );
        let mut stages = seed_pipeline().stages;
        stages[1]
            .worker
            .configs
            .insert("big".into(), Value::String("x".repeat(MAX_CONFIGS_BYTES)));
        assert_eq!(
            validate_stages(&stages).expect_err("refused").path,
            "$.stages[1].worker.configs"
        );
        let mut stages = seed_pipeline().stages;
        stages[2].worker.output.fields[0].name = String::new();
        assert_eq!(
            validate_stages(&stages).expect_err("refused").path,
            "$.stages[2].worker.output.fields[0].name"
        );
        let many = vec![seed_pipeline().stages[0].clone(); MAX_STAGES + 1];
        assert_eq!(
            validate_stages(&many).expect_err("refused").path,
            "$.stages"
        );
    }

    #[test]
    fn unmapped_input_is_refused() {
        let mut stages = seed_pipeline().stages;
        stages[0].input_map.clear();
        assert!(validate_stages(&stages).is_err());
    }
}
