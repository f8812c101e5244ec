//! The intake on the in-memory fakes: what each kind of delivery is settled as, and how long a
//! failing one is tried (on tokio's paused clock, so the pauses take no time).

use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::domain::{JobId, TaskId, TaskStatus};
use crate::fakes::{MemoryBroker, MemoryStore, Op, sample_job};
use crate::ports::StoreError;

/// An intake over a store holding a job whose `work` stage has two tasks.
fn setup() -> (Intake, MemoryStore, JobId, Vec<TaskId>) {
    let store = MemoryStore::new();
    let job = sample_job("intake", 2);
    let (id, tasks) = (
        job.id.clone(),
        job.current_stage.iter().flat_map(|s| &s.tasks),
    );
    let tasks = tasks.map(|t| t.task_id.clone()).collect();
    store.put_job(job);
    let coordinator = Coordinator::new(Arc::new(store.clone()), Arc::new(MemoryBroker::new()));
    let intake = Intake::new(coordinator, Arc::new(store.clone()));
    (intake, store, id, tasks)
}

fn body(id: &JobId, task: &TaskId, outputs: Value) -> Vec<u8> {
    let result = json!({"job_id": id, "task_id": task, "outputs": outputs});
    serde_json::to_vec(&result).expect("JSON")
}

async fn settle(intake: &Intake, body: &[u8]) -> Settle {
    intake
        .handle(body, &|| true, &CancellationToken::new())
        .await
}

fn task(store: &MemoryStore, id: &JobId, index: usize) -> crate::domain::TaskRecord {
    let job = store.job(id).expect("active");
    job.current_stage.expect("in flight").tasks[index].clone()
}

#[tokio::test]
async fn a_result_is_recorded_then_acked() {
    let (intake, store, id, tasks) = setup();
    let settled = settle(&intake, &body(&id, &tasks[0], json!({"done": 1}))).await;
    assert_eq!(settled, Settle::Ack);
    assert_eq!(task(&store, &id, 0).status, TaskStatus::Done);
}

#[tokio::test]
async fn what_can_never_be_processed_is_dead_lettered() {
    let (intake, _, id, tasks) = setup();
    assert_eq!(settle(&intake, b"{not json").await, Settle::Reject);
    let huge = body(
        &id,
        &tasks[0],
        json!({"done": "x".repeat(MAX_RESULT_BYTES)}),
    );
    assert_eq!(settle(&intake, &huge).await, Settle::Reject);
}

#[tokio::test]
async fn a_result_for_no_active_job_is_acked_and_changes_nothing() {
    let (intake, store, _, tasks) = setup();
    let other = JobId::derive("m", "elsewhere");
    let settled = settle(&intake, &body(&other, &tasks[0], json!({"done": 1}))).await;
    assert_eq!(settled, Settle::Ack);
    assert_eq!(store.writes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_short_outage_is_waited_out_in_process() {
    let (intake, store, id, tasks) = setup();
    for _ in 0..3 {
        store.fail_next(Op::Load, StoreError::Unavailable("down".into()));
    }
    let settled = settle(&intake, &body(&id, &tasks[0], json!({"done": 1}))).await;
    assert_eq!(settled, Settle::Ack);
    assert_eq!(task(&store, &id, 0).status, TaskStatus::Done);
}

#[tokio::test(start_paused = true)]
async fn a_result_the_store_refuses_fails_its_attempt_with_the_reason() {
    let (intake, store, id, tasks) = setup();
    store.fail_next(Op::CompareAndSet, StoreError::Refused("key too odd".into()));
    let settled = settle(&intake, &body(&id, &tasks[0], json!({"done": 1}))).await;
    assert_eq!(settled, Settle::Ack);
    let record = task(&store, &id, 0);
    assert_eq!(record.attempt, 2, "the failed attempt is retried");
    let job = store.job(&id).expect("active");
    let history = &job.current_stage.expect("in flight").tasks[0];
    assert!(history.previous_ids.contains(&tasks[0]), "{history:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_persists_while_the_store_answers_is_the_messages_own() {
    let (intake, store, id, tasks) = setup();
    for _ in 0..MAX_TRIES + 1 {
        store.fail_next(Op::Load, StoreError::Unavailable("odd".into()));
    }
    let settled = settle(&intake, &body(&id, &tasks[0], json!({"done": 1}))).await;
    assert_eq!(settled, Settle::Ack, "recorded as a failed attempt");
    assert_eq!(task(&store, &id, 0).attempt, 2);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_cannot_reach_the_store_hands_the_delivery_back() {
    let (intake, store, id, tasks) = setup();
    for _ in 0..1000 {
        store.fail_next(Op::Load, StoreError::Unavailable("down".into()));
        store.fail_next(Op::Ping, StoreError::Unavailable("down".into()));
    }
    let started = tokio::time::Instant::now();
    let settled = settle(&intake, &body(&id, &tasks[0], json!({"done": 1}))).await;
    assert_eq!(settled, Settle::Requeue);
    assert!(
        started.elapsed() >= MAX_HOLD,
        "held {:?}",
        started.elapsed()
    );
    assert_eq!(task(&store, &id, 0).status, TaskStatus::Pending);
}

#[tokio::test(start_paused = true)]
async fn a_delivery_whose_channel_closed_or_that_shutdown_interrupts_is_not_held() {
    let (intake, store, id, tasks) = setup();
    store.fail_next(Op::Load, StoreError::Unavailable("down".into()));
    let result = body(&id, &tasks[0], json!({"done": 1}));
    let gone = intake
        .handle(&result, &|| false, &CancellationToken::new())
        .await;
    assert_eq!(gone, Settle::Abandon);
    store.fail_next(Op::Load, StoreError::Unavailable("down".into()));
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    assert_eq!(
        intake.handle(&result, &|| true, &shutdown).await,
        Settle::Requeue
    );
}
