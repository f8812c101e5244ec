//! A rerun from a stage (docs/semantics.md, "Rerun from a stage"): a new run of a file whose
//! job ended, that reuses what the latest ended run recorded for the stages before the one it
//! starts from. Pure: the earlier run and the pipeline in, the new pending run out, or why not.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::ids::StageId;
use super::job::{Job, JobStatus, StageRecord};
use super::new_job::NewJob;
use super::pipeline::StageSpec;
use super::time::Timestamp;

/// Which pipeline a rerun runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PipelineChoice {
    /// The earlier run's snapshot of its pipeline and the machine's configs (the default).
    #[default]
    Snapshot,
    /// The machine's pipeline and configs as they are now.
    Current,
}

/// The pipeline a rerun runs: its id, stages and the machine's configs.
#[derive(Debug, Clone)]
pub struct RunPipeline {
    pub id: String,
    pub stages: Vec<StageSpec>,
    pub configs: Map<String, Value>,
}

impl RunPipeline {
    /// The pipeline `earlier` ran.
    pub fn of(earlier: &Job) -> Self {
        Self {
            id: earlier.pipeline_id.clone(),
            stages: earlier.pipeline.clone(),
            configs: earlier.machine_configs.clone(),
        }
    }
}

/// Why a rerun cannot start, with the JSON path of the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerunRefused {
    pub path: &'static str,
    pub message: String,
}

fn refused(path: &'static str, message: String) -> RerunRefused {
    RerunRefused { path, message }
}

/// The new run of `earlier`'s file from stage `from`, on `pipeline`: the earlier run's ended
/// stages before `from` are kept as they were (each marked as reused from the earlier run),
/// and the run is pending, to be started like any new job.
pub fn plan(
    earlier: &Job,
    request: &NewJob,
    from: &StageId,
    pipeline: RunPipeline,
    run_id: String,
    now: Timestamp,
) -> Result<Job, RerunRefused> {
    let Some(index) = from.index() else {
        return Err(refused(
            "$.from_stage",
            "a rerun starts from a pipeline stage ('01' or later), not 'init'".into(),
        ));
    };
    if index >= pipeline.stages.len() {
        return Err(refused(
            "$.from_stage",
            format!(
                "the pipeline has {} stage(s); there is no stage '{from}'",
                pipeline.stages.len()
            ),
        ));
    }
    // The job id is a digest of the two: another pair with the same digest is another file.
    if request.machine_id != earlier.machine_id || request.hash != earlier.hash {
        return Err(refused(
            "$.machine_id",
            "the earlier run is of another machine and hash with the same job id".into(),
        ));
    }
    let file_name = request.file_name.as_str();
    if file_name != earlier.file_name {
        return Err(refused(
            "$.file_name",
            format!(
                "the earlier run was of file '{}'; a rerun from a stage reuses its outputs, so it must name the same file",
                earlier.file_name
            ),
        ));
    }
    let mut reused = Vec::with_capacity(index);
    for (position, spec) in pipeline.stages.iter().take(index).enumerate() {
        let id = StageId::for_index(position);
        let stage = earlier
            .stages
            .iter()
            .find(|s| s.id == id)
            .filter(|s| s.completed.is_some() && s.error.is_none())
            .ok_or_else(|| {
                let how = match earlier.status {
                    JobStatus::Finished => "did not complete",
                    _ => "did not complete before the run ended",
                };
                refused(
                    "$.from_stage",
                    format!(
                        "stage '{id}' of the earlier run {how}: rerun from it or an earlier stage"
                    ),
                )
            })?;
        let before = earlier.pipeline.get(position);
        if !before.is_some_and(|b| same_work(b, spec)) {
            return Err(refused(
                "$.pipeline",
                format!(
                    "stage '{id}' of the current pipeline does not match the earlier run's (its worker, with the worker's configs, or its input map differ), so its outputs cannot be reused"
                ),
            ));
        }
        let mut kept = StageRecord::clone(stage);
        // The run that did the work: a stage the earlier run reused in turn keeps its origin.
        if kept.reused_from.is_none() {
            kept.reused_from = Some(earlier.run_id.clone());
        }
        reused.push(Arc::new(kept));
    }
    let mut job = Job::new(
        &earlier.machine_id,
        &earlier.hash,
        file_name,
        &pipeline.id,
        pipeline.stages,
        pipeline.configs,
        run_id,
        now,
    );
    job.stages.extend(reused);
    Ok(job)
}

/// Whether two stages do the same work: same worker, inputs, outputs, configs and input map.
/// Descriptions, deadlines, attempts and what a failure does may differ.
fn same_work(a: &StageSpec, b: &StageSpec) -> bool {
    a.worker == b.worker && a.input_map == b.input_map
}

#[cfg(test)]
#[path = "rerun_tests.rs"]
mod tests;
