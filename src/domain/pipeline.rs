//! Pipelines as clients register them: stages, their workers and input maps, and the limits
//! on them (docs/semantics.md, "Input mapping" and "Fan-out and fan-in"; docs/vocabulary.md).
//! The checks a body passes to become a [`Pipeline`] are in `validation.rs`; machines, which
//! name the pipeline their jobs run, are in `machine.rs`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::StageId;
pub use super::validation::{
    ValidationError, configs_too_large, is_safe_worker_id, validate_stages,
};
use super::validation::{check_name, invalid};
use super::values::check_keys;

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
    /// What a task that uses up its attempts does to the job: `fail` it (the default), or
    /// `hold` it for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

/// What a task that uses up its attempts does to its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The job fails (the default).
    Fail,
    /// The job is held: an operator posts the task's outputs or resumes the job.
    Hold,
}

impl StageSpec {
    pub fn holds_on_failure(&self) -> bool {
        self.on_failure == Some(OnFailure::Hold)
    }

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

impl PipelineBody {
    /// Validates the body and turns it into a pipeline with the given id: the worker configs
    /// can be stored as they are, the name and id are proper names, and the stages pass
    /// [`validate_stages`].
    pub fn into_pipeline(self, id: String) -> Result<Pipeline, ValidationError> {
        for (index, stage) in self.stages.iter().enumerate() {
            check_keys(&stage.worker.configs).map_err(|e| {
                invalid(
                    format!("$.stages[{index}].worker.configs{}", e.path),
                    e.message,
                )
            })?;
        }
        check_name("$.name", &self.name)?;
        check_name("$.id", &id)?;
        validate_stages(&self.stages)?;
        Ok(Pipeline {
            id,
            name: self.name,
            stages: self.stages,
        })
    }

    /// Like [`PipelineBody::into_pipeline`] for a body put at `id`: an `id` in the body must
    /// be that one.
    pub fn into_pipeline_at(self, id: String) -> Result<Pipeline, ValidationError> {
        if self.id.as_deref().is_some_and(|given| given != id) {
            return Err(invalid("$.id", "the body's id differs from the path's"));
        }
        self.into_pipeline(id)
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
            on_failure: None,
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
    use serde_json::json;

    use super::fixtures::*;
    use super::*;

    #[test]
    fn bare_source_means_previous_stage() {
        let source = parse_source(2, "csv_file").expect("parses");
        assert_eq!(source.stage.as_str(), "02");
        let source = parse_source(0, "init_source").expect("parses");
        assert_eq!(source.stage.as_str(), "init");
    }

    fn body(id: Option<&str>) -> PipelineBody {
        let pipeline = seed_pipeline();
        PipelineBody {
            id: id.map(str::to_owned),
            name: pipeline.name,
            stages: pipeline.stages,
        }
    }

    #[test]
    fn a_valid_body_becomes_a_pipeline_with_the_given_id() {
        let pipeline = body(None).into_pipeline("p-1".into()).expect("valid");
        assert_eq!(pipeline.id, "p-1");
        assert_eq!(pipeline.stages, seed_pipeline().stages);
    }

    #[test]
    fn worker_configs_that_cannot_be_stored_are_refused_with_their_path() {
        let mut bad = body(None);
        bad.stages[2]
            .worker
            .configs
            .insert("a".into(), json!({"$where": 1}));
        let error = bad.into_pipeline("p".into()).expect_err("refused");
        assert_eq!(error.path, "$.stages[2].worker.configs.a.$where");
        // Checked before the name, as before the rules moved into the domain.
        let mut both = body(None);
        both.name = String::new();
        both.stages[0].worker.configs.insert("$x".into(), json!(1));
        let error = both.into_pipeline("p".into()).expect_err("refused");
        assert_eq!(error.path, "$.stages[0].worker.configs.$x");
    }

    #[test]
    fn a_blank_name_or_id_is_refused() {
        let mut blank = body(None);
        blank.name = " ".into();
        assert_eq!(
            blank.into_pipeline("p".into()).expect_err("refused").path,
            "$.name"
        );
        let error = body(None).into_pipeline("\n".into()).expect_err("refused");
        assert_eq!(error.path, "$.id");
    }

    #[test]
    fn a_body_put_at_an_id_must_not_name_another() {
        let error = body(Some("other"))
            .into_pipeline_at("p".into())
            .expect_err("refused");
        assert_eq!(error.path, "$.id");
        assert_eq!(error.message, "the body's id differs from the path's");
        assert!(body(Some("p")).into_pipeline_at("p".into()).is_ok());
        assert!(body(None).into_pipeline_at("p".into()).is_ok());
    }
}
