//! The group commit on the fakes: the compare-and-sets of many jobs share store commands, a
//! statement that loses is retried alone while the others go on, and a command that fails
//! reaches every write in it.

use super::*;

/// Starts `count` jobs of files `<name>-<n>` (their split stage in flight).
async fn jobs(coordinator: &Coordinator, name: &str, count: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(start(coordinator, &format!("{name}-{n}")).await);
    }
    ids
}

/// Handles the split's result of each of `ids` (two parts each) at once (see [`at_once`]).
async fn splits_at_once(
    coordinator: &Coordinator,
    store: &MemoryStore,
    ids: &[JobId],
) -> Vec<Outcome> {
    let parts = vec![json!({"part": 0}), json!({"part": 1})];
    let events = ids
        .iter()
        .map(|id| done(&tasks(store, id)[0], parts.clone()))
        .collect();
    at_once(coordinator, ids, events).await
}

/// Handles `events`, one for each of `ids`, at once: the first [`COMMIT_IN_FLIGHT`] one by
/// one, each a command of its own (held while a test holds the store's writes), then the
/// others, which queue behind those commands and go as one.
async fn at_once(coordinator: &Coordinator, ids: &[JobId], events: Vec<Event>) -> Vec<Outcome> {
    let mut handles = Vec::new();
    for (n, (id, event)) in ids.iter().zip(events).enumerate() {
        let (coordinator, id) = (coordinator.clone(), id.clone());
        handles.push(tokio::spawn(
            async move { coordinator.handle(&id, event).await },
        ));
        if n < COMMIT_IN_FLIGHT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    handles
}

/// How many tasks of job `id` the broker was handed.
fn dispatched_of(broker: &MemoryBroker, id: &JobId) -> usize {
    let sent = broker.dispatches();
    sent.iter().filter(|(_, d)| &d.job_id == id).count()
}

#[tokio::test]
async fn results_of_many_jobs_at_once_share_store_commands() {
    let (coordinator, store, broker) = setup();
    let ids = jobs(&coordinator, "many", 20).await;
    let (commands, writes) = (store.commands(), store.writes());
    let hold = store.hold_writes().await;
    let handles = splits_at_once(&coordinator, &store, &ids).await;
    drop(hold);
    for outcome in outcomes(handles).await {
        assert!(
            matches!(outcome, Ok(Handled::Applied { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(store.writes() - writes, 20, "every job written once");
    assert_eq!(
        store.commands() - commands,
        COMMIT_IN_FLIGHT + 1,
        "the first jobs' commands, then one for all that queued behind them"
    );
    for id in &ids {
        assert_eq!(
            dispatched_of(&broker, id),
            3,
            "the split, then its two parts"
        );
    }
}

#[tokio::test]
async fn a_statement_that_loses_is_read_again_while_the_others_are_carried_out_once() {
    let (coordinator, store, broker) = setup();
    let ids = jobs(&coordinator, "lose", COMMIT_IN_FLIGHT + 3).await;
    let loads = store.loads();
    // Another replica writes a queued job just before its statement is checked: it loses.
    store.rival_before_next_write_of(&ids[COMMIT_IN_FLIGHT + 1], |_| {});
    let hold = store.hold_writes().await;
    let handles = splits_at_once(&coordinator, &store, &ids).await;
    drop(hold);
    for outcome in outcomes(handles).await {
        assert!(
            matches!(outcome, Ok(Handled::Applied { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(store.conflicts(), 1, "one statement lost");
    assert_eq!(
        store.loads() - loads,
        1,
        "only the loser read its job again"
    );
    for id in &ids {
        let job = store.job(id).expect("running");
        assert_eq!(job.current_stage.expect("work").tasks.len(), 2, "{id}");
        assert_eq!(
            dispatched_of(&broker, id),
            3,
            "each dispatch published once: {id}"
        );
    }
}

#[tokio::test]
async fn a_command_that_fails_reaches_every_write_in_it_as_transient() {
    let (coordinator, store, _) = setup();
    let ids = jobs(&coordinator, "fail", COMMIT_IN_FLIGHT + 3).await;
    for _ in 0..COMMIT_IN_FLIGHT {
        store.pass_next(Op::CompareAndSetMany); // the first jobs' commands
    }
    store.fail_next(
        Op::CompareAndSetMany,
        StoreError::Unavailable("down".into()),
    );
    let hold = store.hold_writes().await;
    let handles = splits_at_once(&coordinator, &store, &ids).await;
    drop(hold);
    let outcomes = outcomes(handles).await;
    let (first, queued) = outcomes.split_at(COMMIT_IN_FLIGHT);
    for outcome in first {
        assert!(
            matches!(outcome, Ok(Handled::Applied { .. })),
            "{outcome:?}"
        );
    }
    for outcome in queued {
        match outcome {
            Err(error) => assert!(error.is_transient(), "{error}"),
            other => panic!("the command failed: {other:?}"),
        }
    }
    // Nothing of theirs was written; handled again, each is applied.
    for id in &ids[COMMIT_IN_FLIGHT..] {
        let split = tasks(&store, id)[0].clone();
        let stage = store
            .job(id)
            .expect("running")
            .current_stage
            .expect("split");
        assert_eq!(stage.tasks.len(), 1, "still the split");
        let again = coordinator
            .handle(id, done(&split, vec![json!({"part": 0})]))
            .await;
        assert!(matches!(again, Ok(Handled::Applied { .. })), "{again:?}");
    }
}

#[tokio::test]
async fn jobs_that_end_at_once_share_their_moves_to_history_and_a_failure_stays_its_own() {
    let (coordinator, store, _) = setup();
    let ids = jobs(&coordinator, "end", COMMIT_IN_FLIGHT + 8).await;
    for id in &ids {
        let split = tasks(&store, id)[0].clone();
        let outcome = coordinator
            .handle(id, done(&split, vec![json!({"part": 0})]))
            .await;
        assert!(
            matches!(outcome, Ok(Handled::Applied { .. })),
            "{outcome:?}"
        );
    }
    let calls = store.archive_calls();
    // The move of the third job to end fails; the others' do not.
    for _ in 0..2 {
        store.pass_next(Op::Archive);
    }
    store.fail_next(Op::Archive, StoreError::Unavailable("gone".into()));
    let events = ids
        .iter()
        .map(|id| done(&tasks(&store, id)[0], vec![json!({"done": 0})]))
        .collect();
    let hold = store.hold_writes().await;
    let handles = at_once(&coordinator, &ids, events).await;
    drop(hold);
    let outcomes = outcomes(handles).await;
    let failed: Vec<usize> = (0..ids.len()).filter(|&n| outcomes[n].is_err()).collect();
    assert_eq!(failed.len(), 1, "one move failed: {outcomes:?}");
    let error = outcomes[failed[0]].as_ref().expect_err("failed");
    assert!(error.is_transient(), "{error}");
    let moved = store.archive_calls() - calls;
    assert!(
        moved < ids.len(),
        "{moved} archive calls for {} jobs",
        ids.len()
    );
    for (n, id) in ids.iter().enumerate() {
        let record = store.load_history(id).await.expect("read");
        let active = store.job(id);
        if n == failed[0] {
            // Ended and still active: the sweep finishes the move.
            assert_eq!(active.map(|j| j.status), Some(JobStatus::Finished));
        } else {
            assert!(active.is_none(), "job {n} is still active");
            let record = record.expect("on record");
            assert_eq!(record.job.status, JobStatus::Finished);
        }
    }
}
