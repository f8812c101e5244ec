//! A request to start a job, and the rules it keeps before the coordinator sees it
//! (docs/semantics.md, "Starting a job").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ids::StageId;
use super::rerun::PipelineChoice;
use super::validation::{ValidationError, invalid};

/// Longest accepted `hash`, `machine_id` or `file_name`, in bytes.
pub const MAX_FIELD_LEN: usize = 1024;

/// Body of `POST /jobs`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct NewJobBody {
    pub hash: String,
    pub machine_id: String,
    pub file_name: String,
    /// Rerun the file from this stage (`"03"`), reusing what the latest ended run recorded for
    /// the stages before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0[1-9]|[1-9][0-9])$"))]
    pub from_stage: Option<String>,
    /// `"current"`: a rerun from a stage runs the machine's current pipeline instead of the
    /// earlier run's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<CurrentPipeline>")]
    pub pipeline: Option<String>,
}

/// The only pipeline a request may name.
#[derive(JsonSchema)]
#[allow(dead_code)]
enum CurrentPipeline {
    #[serde(rename = "current")]
    Current,
}

/// A request to start a job whose fields keep the rules: none is blank, none is longer than
/// [`MAX_FIELD_LEN`] bytes. Only [`NewJob::new`] builds one.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub hash: String,
    pub machine_id: String,
    pub file_name: String,
    /// A rerun from this stage, when set.
    pub from_stage: Option<StageId>,
    /// Which pipeline a rerun from a stage runs.
    pub pipeline: PipelineChoice,
    /// Keeps the struct from being built around [`NewJob::new`], in this crate too (which
    /// `#[non_exhaustive]` would not).
    _checked: Checked,
}

/// Proof that [`NewJob::new`] checked the fields.
#[derive(Debug, Clone, Copy)]
struct Checked;

impl NewJob {
    /// Checks the fields in order (`hash`, `machine_id`, `file_name`); the error names the
    /// first that breaks a rule, with its JSON path in the body.
    pub fn new(
        hash: String,
        machine_id: String,
        file_name: String,
    ) -> Result<Self, ValidationError> {
        check_field("hash", &hash)?;
        check_field("machine_id", &machine_id)?;
        check_field("file_name", &file_name)?;
        Ok(Self {
            hash,
            machine_id,
            file_name,
            from_stage: None,
            pipeline: PipelineChoice::Snapshot,
            _checked: Checked,
        })
    }

    /// The same request, as a rerun from stage `from` on `pipeline`.
    pub fn rerun_from(mut self, from: StageId, pipeline: PipelineChoice) -> Self {
        self.from_stage = Some(from);
        self.pipeline = pipeline;
        self
    }
}

impl TryFrom<NewJobBody> for NewJob {
    type Error = ValidationError;

    fn try_from(body: NewJobBody) -> Result<Self, Self::Error> {
        let request = Self::new(body.hash, body.machine_id, body.file_name)?;
        let pipeline = match body.pipeline.as_deref() {
            None => PipelineChoice::Snapshot,
            Some("current") => PipelineChoice::Current,
            Some(_) => {
                return Err(invalid(
                    "$.pipeline",
                    "the only pipeline a request may name is \"current\"",
                ));
            }
        };
        let Some(from) = body.from_stage else {
            return Ok(request);
        };
        let from = StageId::parse(&from)
            .ok()
            // Canonical ids only: "0003" is not stage 03.
            .filter(|s| s.index().is_some_and(|i| StageId::for_index(i) == *s))
            .ok_or_else(|| {
                invalid(
                    "$.from_stage",
                    "a rerun starts from a pipeline stage: '01', '02', …",
                )
            })?;
        Ok(request.rerun_from(from, pipeline))
    }
}

fn check_field(name: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(invalid(
            format!("$.{name}"),
            format!("'{name}' must not be empty"),
        ));
    }
    if value.len() > MAX_FIELD_LEN {
        return Err(invalid(
            format!("$.{name}"),
            format!("'{name}' must be at most {MAX_FIELD_LEN} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job(hash: &str, machine_id: &str, file_name: &str) -> Result<NewJob, ValidationError> {
        NewJob::new(hash.into(), machine_id.into(), file_name.into())
    }

    #[test]
    fn a_request_with_every_field_keeps_them() {
        let job = new_job("h", "m", "f").expect("valid");
        assert_eq!(
            (
                job.hash.as_str(),
                job.machine_id.as_str(),
                job.file_name.as_str()
            ),
            ("h", "m", "f")
        );
        let long = "x".repeat(MAX_FIELD_LEN);
        assert!(new_job(&long, &long, &long).is_ok());
    }

    #[test]
    fn a_blank_field_is_refused_with_its_path() {
        let error = new_job("h", " \t", "f").expect_err("refused");
        assert_eq!(error.path, "$.machine_id");
        assert_eq!(error.message, "'machine_id' must not be empty");
        // The first field in order is named when several break a rule.
        assert_eq!(new_job("", "", "").expect_err("refused").path, "$.hash");
    }

    #[test]
    fn a_long_field_is_refused_with_its_path() {
        let long = "x".repeat(MAX_FIELD_LEN + 1);
        let error = new_job("h", "m", &long).expect_err("refused");
        assert_eq!(error.path, "$.file_name");
        assert_eq!(error.message, "'file_name' must be at most 1024 bytes");
    }

    #[test]
    fn a_body_converts_with_the_same_rules() {
        let body = NewJobBody {
            hash: "h".into(),
            machine_id: String::new(),
            file_name: "f".into(),
            from_stage: None,
            pipeline: None,
        };
        let error = NewJob::try_from(body).expect_err("refused");
        assert_eq!(error.path, "$.machine_id");
    }

    fn rerun_body(from_stage: Option<&str>, pipeline: Option<&str>) -> NewJobBody {
        NewJobBody {
            hash: "h".into(),
            machine_id: "m".into(),
            file_name: "f".into(),
            from_stage: from_stage.map(str::to_owned),
            pipeline: pipeline.map(str::to_owned),
        }
    }

    #[test]
    fn a_rerun_names_a_stage_and_may_name_the_current_pipeline() {
        let request = NewJob::try_from(rerun_body(Some("03"), Some("current"))).expect("valid");
        assert_eq!(request.from_stage.as_ref().map(StageId::as_str), Some("03"));
        assert_eq!(request.pipeline, PipelineChoice::Current);
        let request = NewJob::try_from(rerun_body(Some("02"), None)).expect("valid");
        assert_eq!(request.pipeline, PipelineChoice::Snapshot);
        let plain = NewJob::try_from(rerun_body(None, Some("current"))).expect("valid");
        assert_eq!(plain.from_stage, None);
        for (from, pipeline, path) in [
            (Some("3"), None, "$.from_stage"),
            (Some("stage 03"), None, "$.from_stage"),
            (Some("init"), None, "$.from_stage"),
            (Some("00"), None, "$.from_stage"),
            (Some("0003"), None, "$.from_stage"),
            (Some("03"), Some("latest"), "$.pipeline"),
            (None, Some(""), "$.pipeline"),
        ] {
            let error = NewJob::try_from(rerun_body(from, pipeline)).expect_err("refused");
            assert_eq!(error.path, path, "{from:?} {pipeline:?}");
        }
    }
}
