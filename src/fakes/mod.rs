//! In-memory fakes of the ports, for tests: [`MemoryStore`] and [`MemoryBroker`], with hooks
//! to make an operation fail or to let a rival writer in, and [`sample_job`] to build jobs.
//! The shared suite in [`store_suite`] runs against both [`MemoryStore`] and the MongoDB store
//! (`tests/api/store_suite.rs`), so the fake behaves as the real store does.
//!
//! Compiled for unit tests and with the `testing` feature (the integration tests turn it on);
//! the service never uses it.

mod memory_broker;
mod memory_store;
pub mod store_suite;

pub use memory_broker::MemoryBroker;
pub use memory_store::{MemoryStore, Op};

use serde_json::{Map, Value, json};

use crate::domain::{Event, Job, Pipeline, TaskId, TaskResult, Timestamp, apply_in_place};

/// A pipeline of two stages: `split` (worker `w-split`) takes the file and returns a list, and
/// `work` (worker `w-work`) runs once per item of that list.
pub fn sample_pipeline() -> Pipeline {
    let single = |name: &str| json!({"type": "single", "fields": [{"name": name}]});
    let multiple = |name: &str| json!({"type": "multiple", "fields": [{"name": name}]});
    serde_json::from_value(json!({
        "id": "sample", "name": "sample",
        "stages": [
            {"worker": {"id": "w-split", "name": "split", "input": single("file"), "output": multiple("part")},
             "input_map": {"file": "init:init_source"}, "timeout_s": 60, "max_attempts": 2},
            {"worker": {"id": "w-work", "name": "work", "input": single("part"), "output": single("done")},
             "input_map": {"part": "part"}, "timeout_s": 60, "max_attempts": 2},
        ]
    }))
    .expect("the sample pipeline is valid")
}

/// A new, pending job of machine `m` for file `hash` on [`sample_pipeline`].
pub fn new_sample_job(hash: &str, now: Timestamp) -> Job {
    let pipeline = sample_pipeline();
    Job::new(
        "m",
        hash,
        "file.bin",
        &pipeline.id,
        pipeline.stages,
        Map::new(),
        format!("run-{hash}"),
        now,
    )
}

/// A running job of file `hash` whose stage in flight (`work`) has `width` pending tasks.
pub fn sample_job(hash: &str, width: usize) -> Job {
    let now = Timestamp::from(chrono::Utc::now());
    let mut job = new_sample_job(hash, now);
    apply_in_place(&mut job, &Event::Start, now).expect("a pending job starts");
    let split = job.current_stage.as_ref().expect("split in flight").tasks[0]
        .task_id
        .clone();
    let parts: Vec<Value> = (0..width).map(|n| json!({"part": n})).collect();
    apply_in_place(&mut job, &done(&split, parts), now).expect("the split's result is recorded");
    job
}

/// A successful result of task `task_id` with `outputs`.
pub fn done(task_id: &TaskId, outputs: Vec<Value>) -> Event {
    Event::Result(TaskResult {
        task_id: task_id.clone(),
        run_id: None,
        outputs,
        log: None,
        error: None,
    })
}

/// `seconds` after the start of 2026, the clock of engine tests.
pub fn at(seconds: i64) -> Timestamp {
    let start = Timestamp::parse("2026-01-01T00:00:00Z").expect("valid");
    Timestamp::from(start.as_datetime() + chrono::TimeDelta::seconds(seconds))
}

/// `job` after `event` at [`at`]`(seconds)`, and the effects; panics when the event changed
/// nothing.
pub fn applied(job: &Job, event: Event, seconds: i64) -> (Job, Vec<crate::domain::Effect>) {
    match crate::domain::engine::apply(job, &event, at(seconds)) {
        crate::domain::engine::Decision::Apply { job, effects } => (*job, effects),
        crate::domain::engine::Decision::Ignore(why) => panic!("expected a change, got {why:?}"),
    }
}

/// A pending job of the seed's pipeline: machine `m`, hash `h`, file `f`, run `run`, created
/// at [`at`]`(0)`.
#[cfg(test)]
pub fn seed_job(run: &str) -> Job {
    let pipeline = crate::domain::pipeline::fixtures::seed_pipeline();
    Job::new(
        "m",
        "h",
        "f",
        &pipeline.id,
        pipeline.stages,
        Map::new(),
        run.into(),
        at(0),
    )
}

/// `job` after the first task of its stage in flight answered with `outputs` at
/// [`at`]`(seconds)`.
#[cfg(test)]
pub fn answer_first(job: &Job, outputs: Vec<Value>, seconds: i64) -> Job {
    let stage = job.current_stage.as_ref().expect("a stage in flight");
    let task_id = stage.tasks[0].task_id.clone();
    applied(job, done(&task_id, outputs), seconds).0
}
