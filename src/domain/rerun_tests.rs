//! Planning a rerun from a stage out of the latest ended run.

use serde_json::{Value, json};

use super::*;
use crate::domain::engine::Event;
use crate::fakes::{answer_first, applied, at};

/// A run of the seed's pipeline that ended in stage 03: 01 and 02 completed, then an abort.
fn earlier() -> Job {
    let mut job = applied(&crate::fakes::seed_job("run-1"), Event::Start, 1).0;
    job = answer_first(&job, vec![json!({"csv_file": "c"})], 2);
    job = answer_first(&job, vec![json!({"output_csv": "o"})], 3);
    applied(&job, Event::Abort, 4).0
}

fn request(file: &str) -> NewJob {
    NewJob::new("h".into(), "m".into(), file.into()).expect("a valid request")
}

fn stage(id: &str) -> StageId {
    StageId::parse(id).expect("a stage id")
}

#[test]
fn a_rerun_from_03_keeps_01_and_02_as_reused_and_starts_at_03() {
    let earlier = earlier();
    let job = plan(
        &earlier,
        &request("f"),
        &stage("03"),
        RunPipeline::of(&earlier),
        "run-2".into(),
        at(10),
    )
    .expect("a rerun");
    assert_eq!(
        (job.id.clone(), job.run_id.as_str(), job.status),
        (earlier.id.clone(), "run-2", JobStatus::Pending)
    );
    let ids: Vec<&str> = job.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["init", "01", "02"]);
    for (new, old) in job.stages[1..].iter().zip(&earlier.stages[1..3]) {
        assert_eq!(new.reused_from.as_deref(), Some("run-1"));
        assert_eq!((&new.outputs, &new.tasks), (&old.outputs, &old.tasks));
    }
    assert_eq!(job.stages[0].reused_from, None);
    // Started, it plans stage 03 from the reused outputs and dispatches nothing for 01 or 02.
    let (started, effects) = applied(&job, Event::Start, 11);
    assert_eq!(
        started.current_stage.as_ref().map(|s| s.id.as_str()),
        Some("03")
    );
    let dispatched: Vec<String> = effects
        .iter()
        .filter_map(|e| match e {
            crate::domain::Effect::Dispatch { stage_id, .. } => Some(stage_id.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, ["03"]);
    let task = &started.current_stage.as_ref().expect("03").tasks[0];
    assert_eq!(
        task.inputs["input_csv"],
        Value::String("o".into()),
        "fed by the reused 02"
    );
}

#[test]
fn a_rerun_refuses_what_it_cannot_reuse() {
    let earlier = earlier();
    let snapshot = || RunPipeline::of(&earlier);
    let refusal = |file: &str, from: &str, pipeline: RunPipeline| {
        plan(
            &earlier,
            &request(file),
            &stage(from),
            pipeline,
            "r".into(),
            at(10),
        )
        .expect_err("refused")
    };
    // Stage 03 never completed in the earlier run: a rerun from 04 would need it.
    let error = refusal("f", "04", snapshot());
    assert_eq!(error.path, "$.from_stage");
    assert!(error.message.contains("stage '03'"), "{}", error.message);
    assert_eq!(refusal("f", "init", snapshot()).path, "$.from_stage");
    assert!(
        refusal("f", "05", snapshot())
            .message
            .contains("4 stage(s)")
    );
    assert_eq!(refusal("other.csv", "02", snapshot()).path, "$.file_name");
    // The current pipeline changed stage 01's worker: its outputs cannot be reused.
    let mut changed = snapshot();
    changed.stages[0]
        .worker
        .configs
        .insert("delimiter".into(), json!(";"));
    let error = refusal("f", "02", changed.clone());
    assert_eq!(error.path, "$.pipeline");
    // A rerun from 01 reuses nothing, so any pipeline will do; so does a change of deadline.
    assert!(
        plan(
            &earlier,
            &request("f"),
            &stage("01"),
            changed,
            "r".into(),
            at(10)
        )
        .is_ok()
    );
    let mut slower = snapshot();
    slower.stages[0].timeout_s = Some(60);
    assert!(
        plan(
            &earlier,
            &request("f"),
            &stage("03"),
            slower,
            "r".into(),
            at(10)
        )
        .is_ok()
    );
}

#[test]
fn a_rerun_of_a_rerun_names_the_run_that_did_the_work() {
    let earlier = earlier();
    let second = plan(
        &earlier,
        &request("f"),
        &stage("03"),
        RunPipeline::of(&earlier),
        "run-2".into(),
        at(10),
    )
    .expect("a rerun");
    let second = crate::fakes::applied(&second, Event::Abort, 11).0;
    let third = plan(
        &second,
        &request("f"),
        &stage("03"),
        RunPipeline::of(&second),
        "run-3".into(),
        at(12),
    )
    .expect("a rerun");
    assert_eq!(third.stages[1].reused_from.as_deref(), Some("run-1"));
    // Machine "mh" with an empty hash has the same job id ("m" + "h"), but is another file.
    let mut twin = request("f");
    (twin.machine_id, twin.hash) = ("mh".into(), String::new());
    let error = plan(
        &earlier,
        &twin,
        &stage("03"),
        RunPipeline::of(&earlier),
        "r".into(),
        at(10),
    )
    .expect_err("refused");
    assert_eq!(error.path, "$.machine_id");
}
