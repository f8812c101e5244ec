//! Input mapping: from the outputs of earlier stages to the input sets of a stage's tasks.
//!
//! Fan-out (`single` input): one task per output of the one source with other than exactly one
//! output; fields from single-output sources are copied into every task. Fan-in (`multiple`
//! input): one task whose input fields are prefixed `_<n>_`, n counting from 1 over the
//! multi-output source's outputs; single-output fields are repeated under every n. When the
//! multi-output source has no outputs, a fan-out stage has no tasks and a fan-in task gets the
//! single-output fields under `_1_` only.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ids::StageId;
use super::job::Job;
use super::pipeline::{IoType, StageSpec, parse_source};
use super::size::json_size;

/// The input sets of a stage's tasks, in task order.
pub type TaskInputs = Vec<Map<String, Value>>;

struct Binding<'a> {
    input: &'a str,
    stage: StageId,
    field: String,
    outputs: &'a [Value],
}

/// Reads `field` from `output`, the `position`-th (0-based) output of `stage`.
fn lookup(binding: &Binding<'_>, position: usize) -> Result<Value, String> {
    lookup_ref(binding, position).cloned()
}

fn lookup_ref<'a>(binding: &Binding<'a>, position: usize) -> Result<&'a Value, String> {
    let output = binding.outputs.get(position).ok_or_else(|| {
        format!(
            "stage '{}' has no output {} for input '{}'",
            binding.stage,
            position + 1,
            binding.input
        )
    })?;
    match output {
        Value::Null => Err(format!(
            "output {} of stage '{}' is null, but input '{}' needs its field '{}'",
            position + 1,
            binding.stage,
            binding.input,
            binding.field
        )),
        Value::Object(map) => map.get(&binding.field).ok_or_else(|| {
            format!(
                "output {} of stage '{}' lacks the field '{}' that input '{}' is mapped to",
                position + 1,
                binding.stage,
                binding.field,
                binding.input
            )
        }),
        _ => Err(format!(
            "output {} of stage '{}' is not an object",
            position + 1,
            binding.stage
        )),
    }
}

/// The sources of a stage's inputs, and the one source with other than one output, if any,
/// with its output count.
struct Sources<'a> {
    bindings: Vec<Binding<'a>>,
    multi: Option<(StageId, usize)>,
}

impl Sources<'_> {
    fn is_multi(&self, binding: &Binding<'_>) -> bool {
        self.multi
            .as_ref()
            .is_some_and(|(stage, _)| stage == &binding.stage)
    }

    /// How many positions the multi-output source has (1 without one).
    fn count(&self) -> usize {
        self.multi.as_ref().map_or(1, |(_, n)| *n)
    }
}

fn sources<'a>(job: &'a Job, index: usize, spec: &'a StageSpec) -> Result<Sources<'a>, String> {
    let mut bindings = Vec::with_capacity(spec.input_map.len());
    for (input, source) in &spec.input_map {
        let source = parse_source(index, source)?;
        let record = job
            .stages
            .iter()
            .find(|s| s.id == source.stage)
            .ok_or_else(|| {
                format!(
                    "input '{input}' is mapped to stage '{}', which has not run",
                    source.stage
                )
            })?;
        bindings.push(Binding {
            input,
            stage: source.stage,
            field: source.field,
            outputs: &record.outputs,
        });
    }
    let mut multi: BTreeMap<&StageId, usize> = BTreeMap::new();
    for binding in &bindings {
        if binding.outputs.len() != 1 {
            multi.insert(&binding.stage, binding.outputs.len());
        }
    }
    if multi.len() > 1 {
        let names: Vec<String> = multi.keys().map(|s| format!("'{s}'")).collect();
        return Err(format!(
            "the stage maps inputs from several multi-output stages ({}); at most one is allowed",
            names.join(", ")
        ));
    }
    let multi = multi.into_iter().next().map(|(s, n)| (s.clone(), n));
    Ok(Sources { bindings, multi })
}

/// What a stage would be, worked out before anything is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedSize {
    /// How many tasks it would have.
    pub tasks: usize,
    /// About how many bytes its tasks' inputs would take together (every copied value counted
    /// once per task that gets it).
    pub input_bytes: usize,
}

/// The size of the stage at zero-based `index`, from counts and value sizes alone: a fan-out
/// copies its single-output fields into every task, so a large field times many tasks is
/// caught here rather than after the copies were made.
pub fn planned_size(job: &Job, index: usize, spec: &StageSpec) -> Result<PlannedSize, String> {
    let sources = sources(job, index, spec)?;
    let count = sources.count();
    let mut bytes = 0usize;
    for binding in &sources.bindings {
        let per_copy = binding.input.len() + 8;
        if sources.is_multi(binding) {
            for position in 0..count {
                bytes = bytes.saturating_add(per_copy + json_size(lookup_ref(binding, position)?));
            }
        } else {
            let once = per_copy + json_size(lookup_ref(binding, 0)?);
            bytes = bytes.saturating_add(once.saturating_mul(count.max(1)));
        }
    }
    let tasks = match spec.worker.input.kind {
        IoType::Single => count,
        IoType::Multiple => 1,
    };
    Ok(PlannedSize {
        tasks,
        input_bytes: bytes,
    })
}

/// Computes the task input sets of the stage at zero-based `index` of `job`'s pipeline.
pub fn plan_inputs(job: &Job, index: usize, spec: &StageSpec) -> Result<TaskInputs, String> {
    let sources = sources(job, index, spec)?;
    let bindings = &sources.bindings;
    let is_multi = |b: &Binding<'_>| sources.is_multi(b);
    let multi_source = sources.multi.as_ref();
    match spec.worker.input.kind {
        IoType::Single => {
            let count = multi_source.map_or(1, |(_, n)| *n);
            (0..count)
                .map(|i| {
                    bindings
                        .iter()
                        .map(|b| {
                            let position = if is_multi(b) { i } else { 0 };
                            Ok((b.input.to_owned(), lookup(b, position)?))
                        })
                        .collect()
                })
                .collect()
        }
        IoType::Multiple => {
            let count = multi_source.map_or(1, |(_, n)| *n);
            let mut inputs = Map::new();
            for n in 1..=count.max(1) {
                for b in bindings {
                    let value = if is_multi(b) {
                        if n > count {
                            continue;
                        }
                        lookup(b, n - 1)?
                    } else {
                        lookup(b, 0)?
                    };
                    inputs.insert(format!("_{n}_{}", b.input), value);
                }
            }
            Ok(vec![inputs])
        }
    }
}

/// A task's configs: the worker's, overlaid key by key by the machine's.
pub fn merge_configs(
    worker: &Map<String, Value>,
    machine: &Map<String, Value>,
) -> Map<String, Value> {
    let mut configs = worker.clone();
    for (key, value) in machine {
        configs.insert(key.clone(), value.clone());
    }
    configs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::job::StageRecord;
    use crate::domain::pipeline::IoType::*;
    use crate::domain::pipeline::fixtures::stage;
    use crate::domain::time::Timestamp;

    fn job_with(stages: Vec<(&str, Vec<Value>)>) -> Job {
        let now = Timestamp::now();
        let mut job = Job::new("m", "h", "file", "p", vec![], Map::new(), "run".into(), now);
        for (id, outputs) in stages {
            let mut record = StageRecord::init("x", now);
            record.id = StageId::parse(id).expect("stage id");
            record.outputs = outputs;
            job.stages.push(record.into());
        }
        job
    }

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn fan_out_makes_one_task_per_output_and_copies_single_fields() {
        let job = job_with(vec![
            ("01", vec![json!({"csv": "c1"})]),
            (
                "02",
                vec![json!({"t": "a"}), json!({"t": "b"}), json!({"t": "c"})],
            ),
        ]);
        let spec = stage(
            "w",
            (Single, &["table", "csv"]),
            (Single, &[]),
            &[("table", "t"), ("csv", "01:csv")],
        );
        let tasks = plan_inputs(&job, 2, &spec).expect("plans");
        assert_eq!(
            tasks,
            vec![
                obj(json!({"table": "a", "csv": "c1"})),
                obj(json!({"table": "b", "csv": "c1"})),
                obj(json!({"table": "c", "csv": "c1"})),
            ]
        );
    }

    #[test]
    fn fan_in_prefixes_fields_and_repeats_single_fields() {
        let job = job_with(vec![
            ("01", vec![json!({"csv": "c1"})]),
            ("02", vec![json!({"f": "a"}), json!({"f": "b"})]),
        ]);
        let spec = stage(
            "w",
            (Multiple, &["source_file", "csv"]),
            (Single, &["out"]),
            &[("source_file", "02:f"), ("csv", "01:csv")],
        );
        let tasks = plan_inputs(&job, 2, &spec).expect("plans");
        assert_eq!(
            tasks,
            vec![obj(json!({
                "_1_source_file": "a", "_1_csv": "c1",
                "_2_source_file": "b", "_2_csv": "c1",
            }))]
        );
    }

    #[test]
    fn zero_outputs_give_no_fan_out_tasks_and_one_fan_in_task() {
        let job = job_with(vec![("01", vec![json!({"csv": "c1"})]), ("02", vec![])]);
        let out = stage("w", (Single, &["f"]), (Single, &[]), &[("f", "02:f")]);
        assert_eq!(
            plan_inputs(&job, 2, &out).expect("plans"),
            Vec::<Map<String, Value>>::new()
        );
        let fan_in = stage(
            "w",
            (Multiple, &["f", "csv"]),
            (Single, &[]),
            &[("f", "02:f"), ("csv", "01:csv")],
        );
        assert_eq!(
            plan_inputs(&job, 2, &fan_in).expect("plans"),
            vec![obj(json!({"_1_csv": "c1"}))]
        );
    }

    #[test]
    fn null_source_output_is_a_clear_error() {
        let job = job_with(vec![("01", vec![json!({"f": "a"}), Value::Null])]);
        let spec = stage("w", (Single, &["x"]), (Single, &[]), &[("x", "f")]);
        let err = plan_inputs(&job, 1, &spec).expect_err("fails");
        assert!(err.contains("output 2 of stage '01' is null"), "{err}");
    }

    #[test]
    fn missing_field_is_a_clear_error() {
        let job = job_with(vec![("01", vec![json!({"other": "a"})])]);
        let spec = stage("w", (Single, &["x"]), (Single, &[]), &[("x", "f")]);
        let err = plan_inputs(&job, 1, &spec).expect_err("fails");
        assert!(err.contains("lacks the field 'f'"), "{err}");
    }

    #[test]
    fn two_multi_output_sources_are_refused() {
        let job = job_with(vec![
            ("01", vec![json!({"a": 1}), json!({"a": 2})]),
            ("02", vec![json!({"b": 1}), json!({"b": 2})]),
        ]);
        let spec = stage(
            "w",
            (Single, &["a", "b"]),
            (Single, &[]),
            &[("a", "01:a"), ("b", "02:b")],
        );
        assert!(
            plan_inputs(&job, 2, &spec)
                .expect_err("fails")
                .contains("several")
        );
    }

    #[test]
    fn machine_configs_overlay_worker_configs() {
        let merged = merge_configs(
            &obj(json!({"delimiter": ",", "column_num": "2"})),
            &obj(json!({"delimiter": ";"})),
        );
        assert_eq!(merged, obj(json!({"delimiter": ";", "column_num": "2"})));
    }
}
