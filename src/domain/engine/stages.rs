//! Planning and ending stages: a completed stage's outputs, the next stage's tasks from the
//! input map (one task per input set: the fan-out), stages with no tasks skipped, and the job
//! finished after the last one (docs/semantics.md, "Fan-out and fan-in").

use std::sync::Arc;

use super::{Effect, MAX_STAGE_BYTES, MAX_STAGE_TASKS, Notice, end};
use crate::domain::mapping::{TaskInputs, merge_configs, plan_inputs, planned_size};
use crate::domain::size::{map_size, mib};
use crate::domain::{
    Job, JobStatus, StageId, StageRecord, StageSpec, TaskId, TaskRecord, TaskStatus, Timestamp,
};

/// Ends the stage in flight and moves on.
pub(super) fn complete_stage(job: &mut Job, now: Timestamp, effects: &mut Vec<Effect>) {
    let Some(mut stage) = job.current_stage.take() else {
        return;
    };
    stage.outputs = stage
        .tasks
        .iter()
        .flat_map(|t| t.outputs.iter().flatten().cloned())
        .collect();
    let logs: Vec<&str> = stage
        .tasks
        .iter()
        .filter_map(|t| t.log.as_deref())
        .collect();
    if !logs.is_empty() {
        stage.log = Some(logs.join("\n"));
    }
    stage.completed = Some(now);
    effects.push(Effect::Notify(Notice::StageCompleted(stage.id.clone())));
    job.stages.push(Arc::new(stage));
    advance(job, now, effects);
}

/// Plans the next stage; skips stages with no tasks; finishes the job after the last stage.
pub(super) fn advance(job: &mut Job, now: Timestamp, effects: &mut Vec<Effect>) {
    loop {
        // `stages` holds `init` and every ended pipeline stage, so its length is the next index + 1.
        let index = job.stages.len() - 1;
        let Some(spec) = job.pipeline.get(index).cloned() else {
            end(job, JobStatus::Finished, None, now, effects);
            return;
        };
        let stage_id = StageId::for_index(index);
        let mut record = StageRecord {
            id: stage_id.clone(),
            outputs: Vec::new(),
            worker_id: Some(spec.worker.id.clone()),
            tasks: Vec::new(),
            started: Some(now),
            completed: None,
            log: None,
            error: None,
            reused_from: None,
        };
        let planned = check_plan(job, index, &spec).and_then(|()| plan_inputs(job, index, &spec));
        match planned {
            Err(reason) => {
                let message = format!("stage '{stage_id}' cannot start: {reason}");
                record.error = Some(message.clone());
                record.completed = Some(now);
                job.stages.push(Arc::new(record));
                end(job, JobStatus::Failed, Some(message), now, effects);
                return;
            }
            Ok(inputs) if inputs.is_empty() => {
                record.completed = Some(now);
                job.stages.push(Arc::new(record));
                effects.push(Effect::Notify(Notice::StageCompleted(stage_id)));
            }
            Ok(inputs) => {
                record.tasks = new_tasks(job, &stage_id, &spec, inputs, now);
                let task_ids = record.tasks.iter().map(|t| t.task_id.clone()).collect();
                job.current_stage = Some(record);
                effects.push(Effect::Dispatch { stage_id, task_ids });
                return;
            }
        }
    }
}

/// Checks the stage at `index` against the budgets from counts and sizes alone, before any
/// input or config is copied into its tasks.
fn check_plan(job: &Job, index: usize, spec: &StageSpec) -> Result<(), String> {
    let planned = planned_size(job, index, spec)?;
    if planned.tasks > MAX_STAGE_TASKS {
        return Err(format!(
            "it would have {} tasks, and a stage may have at most {MAX_STAGE_TASKS}",
            planned.tasks
        ));
    }
    // Every task carries the merged configs, whatever the worker's and the machine's overlap.
    let configs = map_size(&spec.worker.configs) + map_size(&job.machine_configs);
    let bytes = planned
        .input_bytes
        .saturating_add(planned.tasks.saturating_mul(configs));
    if bytes > MAX_STAGE_BYTES {
        return Err(format!(
            "its {} task(s) would take about {} MiB of inputs and configs, more than the {} MiB a stage may take",
            planned.tasks,
            mib(bytes),
            MAX_STAGE_BYTES / 1024 / 1024
        ));
    }
    Ok(())
}

/// The first attempts of a stage's tasks, one per input set.
fn new_tasks(
    job: &Job,
    stage_id: &StageId,
    spec: &StageSpec,
    inputs: TaskInputs,
    now: Timestamp,
) -> Vec<TaskRecord> {
    let configs = merge_configs(&spec.worker.configs, &job.machine_configs);
    let deadline = now.plus_seconds(spec.timeout_s());
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, inputs)| TaskRecord {
            task_id: TaskId::derive(&job.run_id, stage_id, i, 1),
            previous_ids: Vec::new(),
            status: TaskStatus::Pending,
            attempt: 1,
            inputs,
            configs: configs.clone(),
            issued: now,
            deadline,
            dispatched: None,
            outputs: None,
            log: None,
            error: None,
            completed: None,
        })
        .collect()
}
