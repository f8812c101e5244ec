use serde_json::{Map, Value, json};

use super::*;
use crate::domain::job::JobView;
use crate::domain::pipeline::fixtures::seed_pipeline;

/// The seed's `GET /history/{job}` example, verbatim.
const SEED_HISTORY: &str = include_str!("../../tests/fixtures/seed-history.json");

fn seed() -> Value {
    serde_json::from_str(SEED_HISTORY).expect("the seed fixture is JSON")
}

/// The outputs the seed's stage `id` returned.
fn seed_outputs(id: &str) -> Vec<Value> {
    seed()["stages"]
        .as_array()
        .and_then(|stages| stages.iter().find(|s| s["id"] == id))
        .and_then(|s| s["outputs"].as_array().cloned())
        .expect("stage in the seed")
}

fn now() -> Timestamp {
    Timestamp::parse("2020-07-16T10:15:53.278087Z").expect("valid")
}

fn new_job() -> Job {
    let pipeline = seed_pipeline();
    Job::new(
        "735d39eb6dc94acdadc9d019ff54fb1f",
        "502a515f3b0c661ae0532da64863157a4e7c2b908351a15de1e59dc6fa0327ed695a9708ebaf312a1dd70617b573af6b52f45a380ccb29a3104f85560a102477",
        "5bb6e7a9fbf14e619956f76d7bbfcf17",
        &pipeline.id,
        pipeline.stages,
        Map::new(),
        "run-1".into(),
        now(),
    )
}

fn applied(job: &Job, event: Event) -> (Job, Vec<Effect>) {
    match apply(job, &event, now()) {
        Decision::Apply { job, effects } => (*job, effects),
        Decision::Ignore(why) => panic!("expected a change, got {why:?}"),
    }
}

fn ok(task_id: &TaskId, outputs: Vec<Value>) -> Event {
    crate::fakes::done(task_id, outputs)
}

fn failure(task_id: &TaskId, error: &str) -> Event {
    Event::Result(TaskResult {
        task_id: task_id.clone(),
        run_id: None,
        outputs: vec![Value::Null],
        log: None,
        error: Some(error.into()),
    })
}

fn current_ids(job: &Job) -> Vec<TaskId> {
    job.current_stage
        .as_ref()
        .map(|s| s.tasks.iter().map(|t| t.task_id.clone()).collect())
        .unwrap_or_default()
}

fn started() -> Job {
    applied(&new_job(), Event::Start).0
}

/// Runs the seed's example through the engine, answering each dispatch the way the seed's workers did.
fn run_seed() -> Job {
    let mut job = started();
    for stage in ["01", "02", "03"] {
        job = applied(&job, ok(&current_ids(&job)[0], seed_outputs(stage))).0;
    }
    let ids = current_ids(&job);
    assert_eq!(ids.len(), 14, "stage 04 fans out to one task per table");
    // Answer out of order: the outputs must still follow task order.
    for id in ids.iter().rev() {
        let (j, _) = applied(&job, ok(id, vec![Value::Null]));
        job = j;
    }
    job
}

#[test]
fn seed_example_replays_to_the_seed_history_record() {
    let job = run_seed();
    assert_eq!(job.status, JobStatus::Finished);
    assert!(job.current_stage.is_none());
    let view = serde_json::to_value(JobView::from(&job)).expect("serialises");
    let stages: Vec<Value> = view["stages"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| json!({"id": s["id"], "outputs": s["outputs"]}))
        .collect();
    // The seed's record, key for key; our extensions are left out of the comparison.
    let seed = seed();
    assert_eq!(Value::Array(stages), seed["stages"]);
    for key in ["machine_id", "status", "pipeline_id", "created"] {
        assert_eq!(view[key], seed[key], "{key}");
    }
}

#[test]
fn fan_out_tasks_get_their_table_and_the_copied_fields() {
    let mut job = started();
    for outputs in [
        vec![json!({"csv_file": "c"})],
        vec![json!({"output_csv": "o"})],
        vec![
            json!({"unique_id": "a", "result_table": "ta"}),
            json!({"unique_id": "b", "result_table": "tb"}),
        ],
    ] {
        job = applied(&job, ok(&current_ids(&job)[0], outputs)).0;
    }
    let stage = job.current_stage.as_ref().expect("stage 04 in flight");
    assert_eq!(stage.id.as_str(), "04");
    let inputs: Vec<Value> = stage
        .tasks
        .iter()
        .map(|t| Value::Object(t.inputs.clone()))
        .collect();
    assert_eq!(
        inputs,
        vec![
            json!({"table": "ta", "sensor": "a", "source": "c"}),
            json!({"table": "tb", "sensor": "b", "source": "c"}),
        ]
    );
}

#[test]
fn start_dispatches_stage_one_and_announces_running() {
    let (job, effects) = applied(&new_job(), Event::Start);
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.version, 1);
    let ids = current_ids(&job);
    assert_eq!(ids.len(), 1);
    assert_eq!(
        effects,
        vec![
            Effect::Notify(Notice::Job(JobStatus::Running)),
            Effect::Dispatch {
                stage_id: StageId::for_index(0),
                task_ids: ids.clone()
            },
        ]
    );
    let task = &job.current_stage.as_ref().expect("in flight").tasks[0];
    assert_eq!(
        task.inputs.get("source_file"),
        Some(&json!("5bb6e7a9fbf14e619956f76d7bbfcf17"))
    );
    assert_eq!(
        apply(&job, &Event::Start, now()),
        Decision::Ignore(Ignored::AlreadyStarted)
    );
}

#[test]
fn finishing_emits_archive_and_job_finished() {
    let mut job2 = started();
    for outputs in [
        vec![json!({"csv_file": "c"})],
        vec![json!({"output_csv": "o"})],
        vec![json!({"unique_id": "a", "result_table": "ta"})],
    ] {
        job2 = applied(&job2, ok(&current_ids(&job2)[0], outputs)).0;
    }
    let (done, effects) = applied(&job2, ok(&current_ids(&job2)[0], vec![Value::Null]));
    assert_eq!(done.status, JobStatus::Finished);
    assert_eq!(done.completed, Some(now()));
    assert_eq!(
        effects,
        vec![
            Effect::Notify(Notice::StageCompleted(StageId::for_index(3))),
            Effect::Archive,
            Effect::Notify(Notice::Job(JobStatus::Finished)),
        ]
    );
}

#[test]
fn duplicate_result_is_ignored() {
    let job = started();
    let id = current_ids(&job)[0].clone();
    let (after, _) = applied(&job, ok(&id, vec![json!({"csv_file": "c"})]));
    // Same result again: stage 01 has ended, so the id is found among ended stages.
    assert_eq!(
        apply(&after, &ok(&id, vec![json!({"csv_file": "x"})]), now()),
        Decision::Ignore(Ignored::Duplicate)
    );
}

#[test]
fn duplicate_result_within_a_stage_in_flight_is_ignored() {
    let mut job = started();
    for outputs in [
        vec![json!({"csv_file": "c"})],
        vec![json!({"output_csv": "o"})],
        vec![
            json!({"unique_id": "a", "result_table": "ta"}),
            json!({"unique_id": "b", "result_table": "tb"}),
        ],
    ] {
        job = applied(&job, ok(&current_ids(&job)[0], outputs)).0;
    }
    let first = current_ids(&job)[0].clone();
    let (after, _) = applied(&job, ok(&first, vec![Value::Null]));
    assert_eq!(
        apply(&after, &ok(&first, vec![Value::Null]), now()),
        Decision::Ignore(Ignored::Duplicate)
    );
}

#[test]
fn result_for_unknown_task_is_ignored() {
    let job = started();
    let stranger = TaskId::derive("another-run", &StageId::for_index(0), 0, 1);
    assert_eq!(
        apply(&job, &ok(&stranger, vec![]), now()),
        Decision::Ignore(Ignored::UnknownTask)
    );
    // A pending job has issued no tasks at all.
    assert_eq!(
        apply(&new_job(), &ok(&stranger, vec![]), now()),
        Decision::Ignore(Ignored::JobNotActive(JobStatus::Pending))
    );
}

#[test]
fn abort_ends_the_job_and_later_results_change_nothing() {
    let job = started();
    let id = current_ids(&job)[0].clone();
    let (aborted, effects) = applied(&job, Event::Abort);
    assert_eq!(aborted.status, JobStatus::Aborted);
    assert!(aborted.current_stage.is_none());
    let last = aborted.stages.last().expect("stage 01 closed");
    assert_eq!(last.id.as_str(), "01");
    assert!(last.error.as_deref().is_some_and(|e| e.contains("aborted")));
    assert_eq!(
        effects,
        vec![
            Effect::Archive,
            Effect::Notify(Notice::Job(JobStatus::Aborted))
        ]
    );
    assert_eq!(
        apply(&aborted, &ok(&id, vec![json!({"csv_file": "c"})]), now()),
        Decision::Ignore(Ignored::JobNotActive(JobStatus::Aborted))
    );
    assert_eq!(
        apply(&aborted, &Event::Abort, now()),
        Decision::Ignore(Ignored::JobNotActive(JobStatus::Aborted))
    );
}

#[test]
fn null_mapped_output_fails_the_job_with_a_clear_reason() {
    let job = started();
    // Stage 01 returns null, but stage 02 maps its `csv_file`.
    let (failed, effects) = applied(&job, ok(&current_ids(&job)[0], vec![Value::Null]));
    assert_eq!(failed.status, JobStatus::Failed);
    let last = failed.stages.last().expect("stage 02 recorded");
    assert_eq!(last.id.as_str(), "02");
    let reason = last.error.clone().expect("reason");
    assert!(
        reason.contains("output 1 of stage '01' is null"),
        "{reason}"
    );
    assert_eq!(failed.error.as_deref(), Some(reason.as_str()));
    assert!(effects.contains(&Effect::Archive));
}

#[test]
fn missing_mapped_field_fails_the_job() {
    let job = started();
    let (failed, _) = applied(&job, ok(&current_ids(&job)[0], vec![json!({"wrong": "x"})]));
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("lacks the field 'csv_file'"))
    );
}

#[test]
fn worker_error_is_retried_with_a_new_attempt_then_fails_the_job() {
    let mut job = started();
    let first = current_ids(&job)[0].clone();
    let (retried, effects) = applied(&job, failure(&first, "disk full"));
    let second = current_ids(&retried)[0].clone();
    assert_ne!(first, second);
    assert_eq!(
        retried.current_stage.as_ref().expect("in flight").tasks[0].attempt,
        2
    );
    assert_eq!(
        effects,
        vec![Effect::Dispatch {
            stage_id: StageId::for_index(0),
            task_ids: vec![second.clone()]
        }]
    );
    // The late error of the first attempt is stale.
    assert_eq!(
        apply(&retried, &failure(&first, "again"), now()),
        Decision::Ignore(Ignored::StaleAttempt)
    );
    job = retried;
    job = applied(&job, failure(&second, "disk full")).0;
    let third = current_ids(&job)[0].clone();
    let (failed, _) = applied(&job, failure(&third, "disk still full"));
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed
        .stages
        .last()
        .and_then(|s| s.error.clone())
        .expect("stage error");
    assert!(
        error.contains("after 3 attempt(s)") && error.contains("disk still full"),
        "{error}"
    );
}

#[test]
fn late_success_of_an_earlier_attempt_counts() {
    let job = started();
    let first = current_ids(&job)[0].clone();
    let (retried, _) = applied(&job, failure(&first, "flaky"));
    let (after, _) = applied(&retried, ok(&first, vec![json!({"csv_file": "c"})]));
    assert_eq!(after.stages.last().map(|s| s.id.as_str()), Some("01"));
}

#[test]
fn timeout_before_the_deadline_is_ignored_and_after_it_retries() {
    let job = started();
    let id = current_ids(&job)[0].clone();
    assert_eq!(
        apply(
            &job,
            &Event::Timeout {
                task_id: id.clone()
            },
            now()
        ),
        Decision::Ignore(Ignored::StaleAttempt)
    );
    let late = now().plus_seconds(3601);
    match apply(&job, &Event::Timeout { task_id: id }, late) {
        Decision::Apply { job, .. } => {
            let task = &job.current_stage.as_ref().expect("in flight").tasks[0];
            assert_eq!(task.attempt, 2);
            assert!(
                task.error
                    .as_deref()
                    .is_some_and(|e| e.contains("timed out"))
            );
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[test]
fn every_applied_event_bumps_the_version_once() {
    let job = started();
    let (next, _) = applied(
        &job,
        ok(&current_ids(&job)[0], vec![json!({"csv_file": "c"})]),
    );
    assert_eq!(next.version, job.version + 1);
}

#[test]
fn a_stage_wider_than_the_limit_fails_the_job_instead_of_starting() {
    let mut job = started();
    for outputs in [
        vec![json!({"csv_file": "c"})],
        vec![json!({"output_csv": "o"})],
    ] {
        job = applied(&job, ok(&current_ids(&job)[0], outputs)).0;
    }
    let tables: Vec<Value> = (0..=MAX_STAGE_TASKS)
        .map(|i| json!({"unique_id": i.to_string(), "result_table": "t"}))
        .collect();
    let (job, effects) = applied(&job, ok(&current_ids(&job)[0], tables));
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.as_deref().expect("a reason");
    assert!(
        error.contains(&format!("would have {} tasks", MAX_STAGE_TASKS + 1)),
        "{error}"
    );
    assert_eq!(job.stages.last().map(|s| s.id.as_str()), Some("04"));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Dispatch { .. })));
    assert!(effects.contains(&Effect::Archive));
}

#[test]
fn a_fail_event_ends_the_job_with_its_reason_and_closes_the_stage_in_flight() {
    let (job, effects) = applied(
        &started(),
        Event::Fail {
            reason: "too large".into(),
        },
    );
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.as_deref(), Some("too large"));
    assert!(job.current_stage.is_none());
    assert_eq!(job.stages[1].error.as_deref(), Some("too large"));
    assert_eq!(
        effects,
        vec![
            Effect::Archive,
            Effect::Notify(Notice::Job(JobStatus::Failed))
        ]
    );
    assert_eq!(
        apply(
            &job,
            &Event::Fail {
                reason: "again".into()
            },
            now()
        ),
        Decision::Ignore(Ignored::JobNotActive(JobStatus::Failed))
    );
}

#[test]
fn a_result_that_names_another_run_is_ignored_with_that_reason() {
    let job = started();
    let task_id = current_ids(&job)[0].clone();
    let event = Event::Result(TaskResult {
        task_id,
        run_id: Some("an-earlier-run".into()),
        outputs: vec![Value::Null],
        log: None,
        error: None,
    });
    assert_eq!(
        apply(&job, &event, now()),
        Decision::Ignore(Ignored::OtherRun)
    );
}

#[test]
fn a_fan_out_that_would_copy_a_large_output_into_many_tasks_fails_before_copying() {
    let mut job = started();
    // Stage 01's output is about 4 MB; stage 04 copies it into each of 300 tasks.
    let chunk = "x".repeat(60 * 1024);
    let large: Map<String, Value> = (0..64)
        .map(|i| (format!("part{i}"), Value::String(chunk.clone())))
        .collect();
    job = applied(
        &job,
        ok(&current_ids(&job)[0], vec![json!({"csv_file": large})]),
    )
    .0;
    job = applied(
        &job,
        ok(&current_ids(&job)[0], vec![json!({"output_csv": "t"})]),
    )
    .0;
    let tables: Vec<Value> = (0..300)
        .map(|i| json!({"unique_id": i, "result_table": format!("t{i}")}))
        .collect();
    let (job, effects) = applied(&job, ok(&current_ids(&job)[0], tables));
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.clone().expect("a reason");
    assert!(
        error.contains("stage '04' cannot start") && error.contains("MiB a stage may take"),
        "{error}"
    );
    assert!(job.current_stage.is_none());
    assert!(effects.contains(&Effect::Archive));
    let last = job.stages.last().expect("stage 04 is recorded");
    assert!(last.tasks.is_empty(), "no task was built");
}
