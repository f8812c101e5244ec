//! The coordinator's parts together, on the in-memory fakes: coalescing, lost races, the size
//! policy, errors through a batch, and a crash between the write and the publish.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

mod group;
mod marks;

use super::*;
use crate::domain::{JobStatus, TaskId, TaskStatus};
use crate::fakes::{MemoryBroker, MemoryStore, Op, done, sample_pipeline};
use crate::ports::{BrokerError, StoreError};

fn setup() -> (Coordinator, MemoryStore, MemoryBroker) {
    let store = MemoryStore::new();
    let broker = MemoryBroker::new();
    store.put_pipeline(sample_pipeline());
    store.put_machine(
        serde_json::from_value(json!({"machine_id": "m", "pipeline_id": "sample"}))
            .expect("a machine"),
    );
    let coordinator = Coordinator::new(Arc::new(store.clone()), Arc::new(broker.clone()));
    (coordinator, store, broker)
}

async fn start(coordinator: &Coordinator, hash: &str) -> JobId {
    let request = NewJob::new(hash.into(), "m".into(), "file.bin".into()).expect("a valid request");
    match coordinator.create_job(request).await.expect("created") {
        Created::Started(id) => id,
        other => panic!("not started: {other:?}"),
    }
}

/// Handles a result for each of `tasks` at once, each 10 ms after the one before (while a
/// test holds the store's writes, they pile up behind the first).
async fn results_at_once(coordinator: &Coordinator, id: &JobId, tasks: &[TaskId]) -> Vec<Outcome> {
    let mut handles = Vec::new();
    for task in tasks {
        let (coordinator, id) = (coordinator.clone(), id.clone());
        let event = done(task, vec![json!({"done": 1})]);
        handles.push(tokio::spawn(
            async move { coordinator.handle(&id, event).await },
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handles
}

type Outcome = tokio::task::JoinHandle<Result<Handled, CoordinatorError>>;

/// What each of `handles` came to, in order.
async fn outcomes(handles: Vec<Outcome>) -> Vec<Result<Handled, CoordinatorError>> {
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.expect("joined"));
    }
    outcomes
}

/// The ids of the tasks in flight of job `id`, as stored.
fn tasks(store: &MemoryStore, id: &JobId) -> Vec<TaskId> {
    let job = store.job(id).expect("an active job");
    let stage = job.current_stage.expect("a stage in flight");
    stage.tasks.into_iter().map(|t| t.task_id).collect()
}

/// Starts a job and records its split with `width` parts: the `work` stage is in flight.
async fn wide(coordinator: &Coordinator, store: &MemoryStore, width: usize) -> JobId {
    let id = start(coordinator, &format!("wide{width}")).await;
    let split = tasks(store, &id)[0].clone();
    let parts = (0..width).map(|n| json!({"part": n})).collect();
    let outcome = coordinator.handle(&id, done(&split, parts)).await;
    assert!(
        matches!(outcome, Ok(Handled::Applied { .. })),
        "{outcome:?}"
    );
    id
}

#[tokio::test]
async fn a_new_job_is_written_then_its_first_stage_dispatched_and_marked() {
    let (coordinator, store, broker) = setup();
    let id = start(&coordinator, "h1").await;
    assert_eq!(store.loads(), 0, "the start began from the job as inserted");
    coordinator.flush().await;
    let sent = broker.dispatches();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "w-split");
    let job = store.job(&id).expect("stored");
    assert_eq!(job.status, JobStatus::Running);
    let task = &job.current_stage.expect("in flight").tasks[0];
    assert_eq!(task.task_id, sent[0].1.task_id);
    assert!(task.dispatched.is_some(), "the outbox mark is written");
    assert_eq!(broker.event_keys(), ["job.running"]);
    let again = NewJob::new("h1".into(), "m".into(), "x".into()).expect("a valid request");
    let outcome = coordinator.create_job(again).await.expect("answered");
    assert!(matches!(outcome, Created::AlreadyActive(_)));
}

#[tokio::test]
async fn results_that_arrive_during_a_write_share_the_next_write() {
    let (coordinator, store, broker) = setup();
    let id = wide(&coordinator, &store, 20).await;
    let work = tasks(&store, &id);
    let writes = store.writes();
    let hold = store.hold_writes().await;
    let handles = results_at_once(&coordinator, &id, &work).await;
    assert_eq!(
        coordinator.batches.waiting(&id),
        work.len() - 1,
        "one writes, the rest wait"
    );
    drop(hold);
    for outcome in outcomes(handles).await {
        assert!(
            matches!(outcome, Ok(Handled::Applied { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(
        store.writes() - writes,
        2,
        "the leader's write, then one for the 19 others"
    );
    assert!(
        store.job(&id).is_none(),
        "the job finished and moved to history"
    );
    assert_eq!(
        broker.event_keys().last().map(String::as_str),
        Some("job.finished")
    );
}

#[tokio::test]
async fn a_lost_race_reads_the_job_again_and_wins_the_next_time() {
    let (coordinator, store, _) = setup();
    let id = wide(&coordinator, &store, 3).await;
    let work = tasks(&store, &id);
    let rival_task = work[2].clone();
    // Another replica records the second result just before this one writes the first.
    store.rival_before_next_write(move |job| {
        let stage = job.current_stage.as_mut().expect("in flight");
        let task = stage.tasks.iter_mut().find(|t| t.task_id == rival_task);
        let task = task.expect("the rival's task");
        task.status = TaskStatus::Done;
        task.outputs = Some(vec![json!({"done": 2})]);
    });
    let outcome = coordinator
        .handle(&id, done(&work[0], vec![json!({"done": 0})]))
        .await;
    assert!(
        matches!(outcome, Ok(Handled::Applied { .. })),
        "{outcome:?}"
    );
    assert_eq!(store.conflicts(), 1);
    let job = store.job(&id).expect("still active");
    let stage = job.current_stage.expect("in flight");
    let statuses: Vec<TaskStatus> = stage.tasks.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [TaskStatus::Done, TaskStatus::Pending, TaskStatus::Done],
        "the rival's result and this one are both kept"
    );
}

#[tokio::test]
async fn endless_rivals_give_up_with_a_transient_error() {
    let (coordinator, store, _) = setup();
    let id = wide(&coordinator, &store, 1).await;
    let work = tasks(&store, &id);
    for _ in 0..MAX_CAS_ATTEMPTS {
        store.rival_before_next_write(|_| {});
    }
    let error = coordinator
        .handle(&id, done(&work[0], vec![json!({"done": 0})]))
        .await
        .expect_err("every race lost");
    assert!(matches!(
        error,
        CoordinatorError::Contention(MAX_CAS_ATTEMPTS)
    ));
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_copy_behind_the_store_is_read_again_not_trusted() {
    let (coordinator, store, _) = setup();
    let id = wide(&coordinator, &store, 2).await;
    let work = tasks(&store, &id);
    // Another replica recorded the first result: this process's copy is now behind.
    let mut ahead = store.job(&id).expect("stored");
    let task = ahead
        .current_stage
        .as_mut()
        .expect("in flight")
        .tasks
        .first_mut();
    let task = task.expect("a task");
    task.status = TaskStatus::Done;
    task.outputs = Some(vec![json!({"done": 0})]);
    ahead.version += 1;
    store.put_job(ahead);
    // Judged on the copy the duplicate would be applied again; read afresh, it is ignored.
    let outcome = coordinator
        .handle(&id, done(&work[0], vec![json!({"done": 0})]))
        .await;
    assert!(matches!(outcome, Ok(Handled::Ignored(_))), "{outcome:?}");
}

#[tokio::test]
async fn a_refused_batch_is_applied_again_event_by_event() {
    let (coordinator, store, _) = setup();
    let id = wide(&coordinator, &store, 3).await;
    let work = tasks(&store, &id);
    let hold = store.hold_writes().await;
    store.pass_next(Op::CompareAndSet); // the leader's own event
    store.fail_next(Op::CompareAndSet, StoreError::Refused("too odd".into())); // the batch
    store.fail_next(Op::CompareAndSet, StoreError::Refused("too odd".into())); // task 1 alone
    let handles = results_at_once(&coordinator, &id, &work).await;
    drop(hold);
    let outcomes = outcomes(handles).await;
    assert!(
        matches!(outcomes[0], Ok(Handled::Applied { .. })),
        "{outcomes:?}"
    );
    match &outcomes[1] {
        Err(error) => assert!(!error.is_transient(), "refused as sent: {error}"),
        other => panic!("task 1 is refused: {other:?}"),
    }
    assert!(
        matches!(outcomes[2], Ok(Handled::Applied { .. })),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn a_batch_that_fails_for_a_while_hands_each_event_a_transient_error() {
    let (coordinator, store, _) = setup();
    let id = wide(&coordinator, &store, 3).await;
    let work = tasks(&store, &id);
    let hold = store.hold_writes().await;
    store.pass_next(Op::CompareAndSet);
    store.fail_next(Op::CompareAndSet, StoreError::Unavailable("down".into()));
    let handles = results_at_once(&coordinator, &id, &work).await;
    drop(hold);
    let outcomes = outcomes(handles).await;
    assert!(matches!(outcomes[0], Ok(Handled::Applied { .. })));
    for outcome in &outcomes[1..] {
        match outcome {
            Err(error) => assert!(error.is_transient(), "{error}"),
            other => panic!("the batch failed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_job_that_would_outgrow_the_store_fails_with_the_reason() {
    let (coordinator, store, broker) = setup();
    let id = wide(&coordinator, &store, 1).await;
    let work = tasks(&store, &id);
    let huge = "x".repeat(crate::ports::MAX_JOB_BYTES + 1);
    let outcome = coordinator
        .handle(&id, done(&work[0], vec![json!({"done": huge})]))
        .await;
    match outcome {
        Ok(Handled::Applied { job, .. }) => {
            assert_eq!(job.status, JobStatus::Failed);
            let reason = job.error.as_deref().unwrap_or_default();
            assert!(reason.contains("MiB"), "{reason}");
        }
        other => panic!("the job fails: {other:?}"),
    }
    assert!(store.job(&id).is_none(), "archived");
    coordinator.flush().await;
    assert_eq!(
        broker.event_keys().last().map(String::as_str),
        Some("job.failed")
    );
}

#[tokio::test]
async fn a_crash_between_the_write_and_the_publish_leaves_the_dispatch_for_the_sweep() {
    let (coordinator, store, broker) = setup();
    let id = start(&coordinator, "crash").await;
    let split = tasks(&store, &id)[0].clone();
    broker.fail_next_dispatch(BrokerError::Unavailable("connection lost".into()));
    let parts = vec![json!({"part": 0}), json!({"part": 1})];
    let error = coordinator
        .handle(&id, done(&split, parts))
        .await
        .expect_err("the publish failed");
    assert!(error.is_transient());
    // The change is durable; its dispatches are recorded but not marked.
    let job = store.job(&id).expect("stored");
    let stage = job.current_stage.expect("work in flight");
    assert_eq!(stage.tasks.len(), 2);
    assert!(stage.tasks.iter().all(|t| t.dispatched.is_none()));
    assert_eq!(broker.dispatches().len(), 1, "only the split's");
    // The same result again is a duplicate: nothing is dispatched twice by it.
    let again = coordinator.handle(&id, done(&split, vec![])).await;
    assert!(matches!(again, Ok(Handled::Ignored(_))), "{again:?}");
    // The sweep, past the grace, publishes the recorded dispatches and marks them.
    let later = Timestamp::from(coordinator.now().as_datetime() + chrono::TimeDelta::seconds(40));
    let swept = crate::sweep::sweep_once(
        &coordinator,
        &store,
        later,
        Duration::from_secs(30),
        &mut crate::sweep::Resume::default(),
    )
    .await
    .expect("swept");
    assert_eq!((swept.actions, swept.failed), (1, 0));
    assert_eq!(broker.dispatches().len(), 3);
    coordinator.flush().await;
    let job = store.job(&id).expect("stored");
    assert!(
        job.current_stage
            .expect("work")
            .tasks
            .iter()
            .all(|t| t.dispatched.is_some())
    );
}

/// Log output captured for one test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_coalesced_batch_names_each_field_of_a_span_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    // Call sites other tests reached first, with no subscriber, cached "never": ask again.
    tracing::callsite::rebuild_interest_cache();
    let (coordinator, store, _) = setup();
    let id = wide(&coordinator, &store, 5).await;
    let work = tasks(&store, &id);
    // The first loss is the cached copy's (read again quietly); the second, a real race.
    store.rival_before_next_write(|_| {});
    store.rival_before_next_write(|_| {});
    let hold = store.hold_writes().await;
    let handles = results_at_once(&coordinator, &id, &work).await;
    drop(hold);
    assert!(outcomes(handles).await.iter().all(Result::is_ok));
    let text = String::from_utf8_lossy(&captured.0.lock().expect("log")).into_owned();
    let spans: Vec<&str> = text
        .lines()
        .flat_map(|line| line.split("handle{").skip(1))
        .map(|rest| rest.split('}').next().unwrap_or_default())
        .collect();
    let lost = text
        .lines()
        .find(|l| l.contains("lost a compare-and-set race"));
    let dispatched = lost.expect("the leader lost its first race");
    assert!(
        dispatched.contains("handle{")
            && dispatched
                .split('}')
                .next()
                .is_some_and(|span| span.contains("stage_id=")),
        "the leader's own lines name the stage: {dispatched}"
    );
    for span in spans {
        for field in ["job_id=", "task_id=", "stage_id="] {
            assert!(span.matches(field).count() <= 1, "{field} twice in {span}");
        }
    }
}

#[tokio::test]
async fn a_mark_that_is_lost_costs_a_harmless_second_publish() {
    let (coordinator, store, broker) = setup();
    let id = start(&coordinator, "unmarked").await;
    coordinator.flush().await;
    let split = tasks(&store, &id)[0].clone();
    store.fail_next(Op::MarkDispatched, StoreError::Unavailable("gone".into()));
    let parts = vec![json!({"part": 0})];
    let outcome = coordinator.handle(&id, done(&split, parts)).await;
    // The mark is off the critical path: the hop is done once the dispatch is confirmed.
    assert!(
        matches!(outcome, Ok(Handled::Applied { .. })),
        "{outcome:?}"
    );
    coordinator.flush().await;
    assert_eq!(broker.dispatches().len(), 2, "the work task was published");
    let job = store.job(&id).expect("running");
    let unmarked = job.current_stage.expect("work").tasks[0]
        .dispatched
        .is_none();
    assert!(unmarked, "the mark was lost");
    let later = Timestamp::from(coordinator.now().as_datetime() + chrono::TimeDelta::seconds(40));
    let mut resume = crate::sweep::Resume::default();
    let grace = Duration::from_secs(30);
    let swept = crate::sweep::sweep_once(&coordinator, &store, later, grace, &mut resume).await;
    assert_eq!(swept.expect("swept").actions, 1);
    let sent = broker.dispatches();
    assert_eq!(sent.len(), 3, "published once more, the same attempt");
    assert_eq!(sent[1].1.task_id, sent[2].1.task_id);
    // The worker answers both copies: the second is a duplicate.
    let work = sent[2].1.task_id.clone();
    let first = coordinator
        .handle(&id, done(&work, vec![json!({"done": 0})]))
        .await;
    assert!(matches!(first, Ok(Handled::Applied { .. })), "{first:?}");
    assert!(store.job(&id).is_none(), "finished and archived");
    let second = coordinator
        .handle(&id, done(&work, vec![json!({"done": 0})]))
        .await;
    assert!(matches!(second, Ok(Handled::UnknownJob)), "{second:?}");
}

#[tokio::test]
async fn a_crash_before_the_move_to_history_is_finished_by_the_sweep() {
    let (coordinator, store, broker) = setup();
    let id = wide(&coordinator, &store, 1).await;
    let work = tasks(&store, &id)[0].clone();
    store.fail_next(Op::Archive, StoreError::Unavailable("gone".into()));
    let outcome = coordinator
        .handle(&id, done(&work, vec![json!({"done": 0})]))
        .await;
    assert!(outcome.is_err_and(|e| e.is_transient()));
    let ended = store.job(&id).expect("still among the active jobs");
    assert_eq!(ended.status, JobStatus::Finished, "the end is durable");
    assert!(
        !broker.event_keys().contains(&"job.finished".to_owned()),
        "not announced yet"
    );
    let mut resume = crate::sweep::Resume::default();
    let grace = Duration::from_secs(30);
    let now = coordinator.now();
    let swept = crate::sweep::sweep_once(&coordinator, &store, now, grace, &mut resume).await;
    assert_eq!(swept.expect("swept").actions, 1);
    assert!(store.job(&id).is_none());
    let record = store
        .load_history(&id)
        .await
        .expect("read")
        .expect("archived");
    assert_eq!(record.job.status, JobStatus::Finished);
}

#[tokio::test]
async fn starting_a_job_while_the_store_is_down_fails_transiently_and_writes_nothing() {
    let (coordinator, store, broker) = setup();
    store.fail_next(Op::Catalog, StoreError::Unavailable("down".into()));
    let request = NewJob::new("down".into(), "m".into(), "f".into()).expect("valid");
    let error = coordinator
        .create_job(request)
        .await
        .expect_err("no machine read");
    assert!(error.is_transient());
    assert!(store.job(&JobId::derive("m", "down")).is_none());
    assert!(broker.dispatches().is_empty());
}
