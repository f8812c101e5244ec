//! Pipelines and machines: the registry data a job is run from.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::StageId;

/// Retries when a stage does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Task deadline when a stage does not say: one hour.
pub const DEFAULT_TIMEOUT_S: u64 = 3600;
/// Most stages a pipeline may have.
pub const MAX_STAGES: usize = 99;
/// Most input or output fields a worker may declare.
pub const MAX_FIELDS: usize = 64;
/// Longest name, id or field name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Most attempts a stage may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest task deadline a stage may ask for: one week.
pub const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;
/// Longest stage description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 2000;
/// Largest worker or machine `configs`, as JSON.
pub const MAX_CONFIGS_BYTES: usize = 16 * 1024;

/// Whether a worker takes one input set per task (`single`, fan-out) or all of them (`multiple`, fan-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IoType {
    Single,
    Multiple,
}

/// One input or output field of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_file: Option<bool>,
}

/// The input or output side of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IoSpec {
    #[serde(rename = "type")]
    pub kind: IoType,
    pub fields: Vec<FieldSpec>,
}

/// The worker a stage runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerSpec {
    /// Routing key and queue suffix: `P.worker.<id>`.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub configs: Map<String, Value>,
    pub input: IoSpec,
    pub output: IoSpec,
}

/// One stage of a pipeline as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub worker: WorkerSpec,
    /// Input field → `"<stage_id>:<output_field>"`, or a bare `"<output_field>"` of the previous stage.
    pub input_map: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

impl StageSpec {
    pub fn timeout_s(&self) -> u64 {
        self.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S)
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }
}

/// A pipeline body as clients send it; `id` is optional on create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    pub stages: Vec<StageSpec>,
}

/// A registered pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub stages: Vec<StageSpec>,
}

/// A registered machine: which pipeline its jobs run, and configs for every task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Machine {
    pub machine_id: String,
    pub pipeline_id: String,
    #[serde(default)]
    pub configs: Map<String, Value>,
}

/// A machine body as clients send it to `PUT /machines/{machine_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineBody {
    pub pipeline_id: String,
    #[serde(default)]
    pub configs: Map<String, Value>,
}

/// A reference from an input field to an output field of an earlier stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub stage: StageId,
    pub field: String,
}

/// Resolves an `input_map` value for the stage at zero-based `index`.
pub fn parse_source(index: usize, value: &str) -> Result<SourceRef, String> {
    match value.split_once(':') {
        Some((stage, field)) => {
            let stage = StageId::parse(stage).map_err(|e| e.to_string())?;
            Ok(SourceRef {
                stage,
                field: field.to_owned(),
            })
        }
        None => Ok(SourceRef {
            stage: if index == 0 {
                StageId::init()
            } else {
                StageId::for_index(index - 1)
            },
            field: value.to_owned(),
        }),
    }
}

/// A problem found in a pipeline, with the JSON path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ValidationError {
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

fn check_name(path: &str, value: &str) -> Result<(), ValidationError> {
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

/// Checks one stage on its own: worker id, names, fields, limits.
fn check_stage(path: &str, stage: &StageSpec) -> Result<(), ValidationError> {
    let worker = &stage.worker;
    if !is_safe_worker_id(&worker.id) {
        return Err(invalid(
            format!("{path}.worker.id"),
            "must be 1-100 characters of A-Z a-z 0-9 - _ . and not start or end with '.'",
        ));
    }
    check_name(&format!("{path}.worker.name"), &worker.name)?;
    check_fields(&format!("{path}.worker.input"), &worker.input)?;
    check_fields(&format!("{path}.worker.output"), &worker.output)?;
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

impl PipelineBody {
    /// Validates the body and turns it into a pipeline with the given id.
    pub fn into_pipeline(self, id: String) -> Result<Pipeline, ValidationError> {
        check_name("$.name", &self.name)?;
        check_name("$.id", &id)?;
        validate_stages(&self.stages)?;
        Ok(Pipeline {
            id,
            name: self.name,
            stages: self.stages,
        })
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    fn io(kind: IoType, fields: &[&str]) -> IoSpec {
        IoSpec {
            kind,
            fields: fields
                .iter()
                .map(|name| FieldSpec {
                    name: (*name).to_owned(),
                    media_type: None,
                    is_file: None,
                })
                .collect(),
        }
    }

    pub fn stage(
        worker: &str,
        input: (IoType, &[&str]),
        output: (IoType, &[&str]),
        map: &[(&str, &str)],
    ) -> StageSpec {
        StageSpec {
            description: None,
            worker: WorkerSpec {
                id: worker.to_owned(),
                name: worker.to_owned(),
                configs: Map::new(),
                input: io(input.0, input.1),
                output: io(output.0, output.1),
            },
            input_map: map
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            timeout_s: None,
            max_attempts: None,
        }
    }

    /// The seed's four-stage pipeline: import, trim, split into 14 tables, sink.
    pub fn seed_pipeline() -> Pipeline {
        use IoType::*;
        Pipeline {
            id: "a34f4ba9-13ad-4ab5-a7e8-d23157513466".to_owned(),
            name: "Energy data".to_owned(),
            stages: vec![
                stage(
                    "import-csv",
                    (Single, &["source_file"]),
                    (Single, &["csv_file"]),
                    &[("source_file", "init:init_source")],
                ),
                stage(
                    "trim-csv",
                    (Single, &["input_csv"]),
                    (Single, &["output_csv"]),
                    &[("input_csv", "csv_file")],
                ),
                stage(
                    "split-by-sensor",
                    (Single, &["input_csv"]),
                    (Multiple, &["unique_id", "result_table"]),
                    &[("input_csv", "02:output_csv")],
                ),
                stage(
                    "sink",
                    (Single, &["table", "sensor", "source"]),
                    (Single, &[]),
                    &[
                        ("table", "03:result_table"),
                        ("sensor", "unique_id"),
                        ("source", "01:csv_file"),
                    ],
                ),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn seed_pipeline_is_valid() {
        assert_eq!(validate_stages(&seed_pipeline().stages), Ok(()));
    }

    #[test]
    fn bare_source_means_previous_stage() {
        let source = parse_source(2, "csv_file").expect("parses");
        assert_eq!(source.stage.as_str(), "02");
        let source = parse_source(0, "init_source").expect("parses");
        assert_eq!(source.stage.as_str(), "init");
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
