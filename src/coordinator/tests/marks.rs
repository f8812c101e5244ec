//! Deferred outbox marks on the fakes: a task that answers within the delay needs no mark, one
//! still pending gets it, and a flush writes what is held at once.

use super::*;
use crate::coordinator::writers::MARK_DELAY;

/// The stored task `index` of the stage in flight of job `id`.
fn stored_task(store: &MemoryStore, id: &JobId, index: usize) -> crate::domain::TaskRecord {
    let job = store.job(id).expect("an active job");
    job.current_stage.expect("a stage in flight").tasks[index].clone()
}

#[tokio::test]
async fn a_task_that_answers_before_its_mark_is_due_gets_none() {
    let (coordinator, store, _broker) = setup();
    let id = start(&coordinator, "marks-quick").await;
    let split = tasks(&store, &id)[0].clone();
    let parts = vec![json!({"part": 0}), json!({"part": 1})];
    let outcome = coordinator.handle(&id, done(&split, parts)).await;
    assert!(
        matches!(outcome, Ok(Handled::Applied { .. })),
        "{outcome:?}"
    );
    assert_eq!(store.marks(), 0, "no mark written before its time");

    // The split answered before its mark was due: no mark for it. The work stage's two tasks
    // are still pending when the flush comes: theirs is written.
    coordinator.flush().await;
    assert_eq!(store.marks(), 1, "the work stage's mark only");
    assert!(stored_task(&store, &id, 0).dispatched.is_some());
    assert!(stored_task(&store, &id, 1).dispatched.is_some());
}

#[tokio::test]
async fn a_task_still_pending_when_its_mark_is_due_gets_it() {
    let (coordinator, store, _broker) = setup();
    let id = start(&coordinator, "marks-slow").await;
    assert!(stored_task(&store, &id, 0).dispatched.is_none());
    tokio::time::sleep(MARK_DELAY + Duration::from_millis(300)).await;
    assert_eq!(store.marks(), 1, "written once due, with no flush");
    assert!(stored_task(&store, &id, 0).dispatched.is_some());
}

#[tokio::test]
async fn a_run_that_ended_gets_no_mark() {
    let (coordinator, store, _broker) = setup();
    let id = start(&coordinator, "marks-aborted").await;
    let outcome = coordinator.handle(&id, Event::Abort).await;
    assert!(
        matches!(outcome, Ok(Handled::Applied { .. })),
        "{outcome:?}"
    );
    coordinator.flush().await;
    assert_eq!(store.marks(), 0, "the run ended before the mark was due");
}

/// A batch that dispatched keeps a copy with its marks, larger than the job it measured: the
/// copy's size is unknown, so the next batch measures instead of bounding from it.
#[tokio::test]
async fn a_copy_with_marks_is_measured_again() {
    let (coordinator, store, _broker) = setup();
    let id = start(&coordinator, "marks-size").await;
    let copy = coordinator.cache.take(&id).expect("the started job's copy");
    assert!(
        copy.job.current_stage.as_ref().expect("01").tasks[0]
            .dispatched
            .is_some()
    );
    assert_eq!(copy.bytes, None, "marked since measured");
    assert!(store.job(&id).is_some());
}
