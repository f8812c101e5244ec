//! The shared store suite: what every [`JobStore`] must do for the coordinator and the sweep,
//! written once and run against the in-memory fake (the unit test below) and the MongoDB store
//! (`tests/api/store_suite.rs`), so the fake cannot drift from the real store. What it pins is
//! argued in docs/consistency.md, "Compare-and-set", "Group commit", "The outbox" and "Archive".
//!
//! Each check uses files (hashes) of its own, so the checks share one store without touching
//! each other's jobs; a query's check judges every job the query returns, its own or not. A
//! failing check does not stop the others: [`run`] runs them all, then names those that failed
//! (each one's panic message says what broke).
//!
//! Layout: `writes.rs` insert, load and compare-and-set; `group.rs` compare-and-sets of many
//! jobs in one call; `outbox.rs` the outbox mark; `archive.rs` the move to history;
//! `queries.rs` the sweep's queries and the rest; `wide.rs` jobs wider than one stored document
//! of tasks.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::domain::{
    Decision, Event, Job, JobId, Machine, Pipeline, TaskId, TaskResult, Timestamp, apply,
};
use crate::ports::{Inserted, JobStore, StoreError};

mod archive;
mod group;
mod outbox;
mod queries;
mod wide;
mod writes;

/// What the suite needs to seed beside the port: the port only reads machines and pipelines.
pub trait Catalog: Send + Sync {
    fn put_machine<'a>(&'a self, machine: &'a Machine) -> BoxFuture<'a, Result<(), StoreError>>;

    fn put_pipeline<'a>(&'a self, pipeline: &'a Pipeline) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// One check of the suite: it panics, saying what broke, when the store fails it.
pub type Check = for<'a> fn(&'a dyn JobStore, &'a dyn Catalog) -> BoxFuture<'a, ()>;

macro_rules! checks {
    ($($module:ident::$name:ident),* $(,)?) => {
        /// Every check of the suite with its name, in the order [`run`] runs them.
        pub const CHECKS: &[(&str, Check)] = &[
            $((stringify!($name), |store, catalog| Box::pin($module::$name(store, catalog))),)*
        ];
    };
}

checks![
    writes::insert_then_already_exists_for_the_same_id,
    writes::load_of_an_unknown_id_is_none,
    writes::the_stamp_is_the_run_and_version_of_the_active_job,
    writes::compare_and_set_wins_on_its_run_and_version,
    writes::compare_and_set_stores_each_step_of_a_run_exactly,
    writes::compare_and_set_loses_on_a_stale_version,
    writes::compare_and_set_loses_on_another_run_of_the_same_job,
    writes::compare_and_set_of_a_job_not_stored_loses_and_creates_nothing,
    group::compare_and_set_many_tells_each_statement_its_own_outcome,
    group::a_write_after_a_win_does_not_turn_the_win_into_a_loss,
    group::compare_and_set_many_of_another_run_or_no_job_loses,
    group::compare_and_set_many_of_nothing_is_no_outcome,
    outbox::mark_dispatched_marks_only_the_named_attempts_and_keeps_the_version,
    outbox::mark_dispatched_of_another_run_or_stage_changes_nothing,
    outbox::marks_of_many_jobs_go_in_one_call_and_a_stale_one_stops_none,
    outbox::a_mark_survives_a_write_from_an_earlier_read_that_leaves_its_task_alone,
    outbox::a_mark_survives_a_write_from_an_earlier_read_that_completes_its_attempt,
    outbox::a_mark_does_not_carry_over_to_the_retry_of_its_attempt,
    archive::archive_moves_the_run_to_history_and_is_idempotent,
    archive::archive_after_a_crash_between_its_steps_only_deletes,
    archive::archive_keeps_earlier_runs_oldest_first,
    archive::the_latest_run_is_the_top_of_history,
    archive::archive_keeps_at_most_max_previous_runs_and_never_revives_a_dropped_one,
    archive::a_late_archive_of_an_earlier_run_keeps_the_later_active_run,
    archive::archive_many_moves_each_run_as_archive_alone_does,
    queries::ended_jobs_selects_exactly_the_ended_jobs_in_id_order,
    queries::jobs_needing_attention_selects_exactly_what_the_sweep_must_see,
    queries::job_bytes_grows_with_the_job,
    queries::ping_and_server_time_answer,
    queries::machines_and_pipelines_read_back_as_put,
    wide::a_wide_stage_reads_back_exactly_through_a_run_of_writes,
    wide::a_lost_race_on_a_wide_job_leaves_the_winner_whole,
    wide::marks_on_a_wide_stage_land_and_survive_a_later_write,
    wide::archive_of_a_wide_job_keeps_every_task,
    wide::a_group_of_wide_writes_tells_each_its_outcome_and_keeps_each_whole,
];

/// Runs every check against `store` and returns the names of the checks that failed. The store
/// must hold nothing of the suite's files (`suite-…` hashes), machine or pipeline yet: a fresh
/// store does; other jobs do not disturb it.
pub async fn failures(store: &dyn JobStore, catalog: &dyn Catalog) -> Vec<&'static str> {
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        if AssertUnwindSafe(check(store, catalog))
            .catch_unwind()
            .await
            .is_err()
        {
            failed.push(*name);
        }
    }
    failed
}

/// Runs every check against `store` (see [`failures`]) and panics naming those that failed;
/// returns how many checks ran.
pub async fn run(store: &dyn JobStore, catalog: &dyn Catalog) -> usize {
    let failed = failures(store, catalog).await;
    assert!(
        failed.is_empty(),
        "{} of {} store checks failed: {}",
        failed.len(),
        CHECKS.len(),
        failed.join(", ")
    );
    CHECKS.len()
}

// ---- helpers shared by the checks ----

/// The file of job `n` of check `check`, so that no two checks share a job.
fn hash(check: &str, n: usize) -> String {
    format!("suite-{check}-{n}")
}

/// The id of the job of file `hash` on machine `m` (as the sample jobs use).
fn id_of(hash: &str) -> JobId {
    JobId::derive("m", hash)
}

/// `job` after `event` at `now`, its version bumped; panics if the engine ignores the event.
fn applied(job: &Job, event: &Event, now: Timestamp) -> Job {
    match apply(job, event, now) {
        Decision::Apply { job, .. } => *job,
        Decision::Ignore(why) => panic!("the engine ignored {event:?}: {why:?}"),
    }
}

/// A failed attempt of task `task_id`.
fn failure(task_id: &TaskId) -> Event {
    Event::Result(TaskResult {
        task_id: task_id.clone(),
        run_id: None,
        outputs: Vec::new(),
        log: None,
        error: Some("boom".into()),
    })
}

/// The id of task `index` of the stage in flight.
fn task_id(job: &Job, index: usize) -> TaskId {
    job.current_stage.as_ref().expect("a stage in flight").tasks[index]
        .task_id
        .clone()
}

async fn insert(store: &dyn JobStore, job: &Job) {
    let inserted = store.insert_job(job).await.expect("insert_job");
    assert_eq!(inserted, Inserted::Created, "insert of job {}", job.id);
}

/// The stored job `id`; panics when there is none.
async fn stored(store: &dyn JobStore, id: &JobId) -> Job {
    store
        .load_job(id)
        .await
        .expect("load_job")
        .unwrap_or_else(|| panic!("job {id} is not stored"))
}

/// Asserts that `stored` is `expected`, naming the first fields that differ.
#[track_caller]
fn assert_job(stored: &Job, expected: &Job, what: &str) {
    if stored == expected {
        return;
    }
    let as_json = |job: &Job| serde_json::to_value(job).expect("a job encodes");
    let mut differences = Vec::new();
    differ("", &as_json(stored), &as_json(expected), &mut differences);
    panic!(
        "{what}: job {} is not as expected: {}",
        expected.id,
        differences.join("; ")
    );
}

/// Where `stored` and `expected` differ, up to five places.
fn differ(path: &str, stored: &Value, expected: &Value, out: &mut Vec<String>) {
    match (stored, expected) {
        (Value::Object(s), Value::Object(e)) => {
            let keys: BTreeSet<&String> = s.keys().chain(e.keys()).collect();
            for key in keys {
                let (s, e) = (s.get(key), e.get(key));
                let (s, e) = (s.unwrap_or(&Value::Null), e.unwrap_or(&Value::Null));
                differ(&format!("{path}.{key}"), s, e, out);
            }
        }
        (Value::Array(s), Value::Array(e)) if s.len() == e.len() => {
            for (n, (s, e)) in s.iter().zip(e).enumerate() {
                differ(&format!("{path}.{n}"), s, e, out);
            }
        }
        _ if stored != expected && out.len() < 5 => {
            out.push(format!("{path} is {stored}, expected {expected}"));
        }
        _ => {}
    }
}

/// Writes `before` → `after` and asserts that it won.
async fn write(store: &dyn JobStore, before: &Job, after: &Job) {
    let won = store
        .compare_and_set(before, after)
        .await
        .expect("compare_and_set");
    assert!(
        won,
        "compare_and_set of job {} at {}",
        before.id, before.version
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Job;
    use crate::fakes::MemoryStore;
    use crate::ports::{Found, HistoryRecord};

    #[tokio::test]
    async fn the_memory_store_passes_the_shared_store_suite() {
        let store = MemoryStore::new();
        assert_eq!(run(&store, &store).await, CHECKS.len());
    }

    /// The fake, except that it forgets every outbox mark: the suite must catch it.
    struct ForgetsMarks(MemoryStore);

    impl JobStore for ForgetsMarks {
        fn insert_job<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Inserted, StoreError>> {
            self.0.insert_job(job)
        }

        fn load_job<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, StoreError>> {
            self.0.load_job(id)
        }

        fn job_stamp<'a>(
            &'a self,
            id: &'a JobId,
        ) -> BoxFuture<'a, Result<Option<(String, i64)>, StoreError>> {
            self.0.job_stamp(id)
        }

        fn latest_run<'a>(
            &'a self,
            id: &'a JobId,
        ) -> BoxFuture<'a, Result<Option<Job>, StoreError>> {
            self.0.latest_run(id)
        }

        fn compare_and_set<'a>(
            &'a self,
            before: &'a Job,
            after: &'a Job,
        ) -> BoxFuture<'a, Result<bool, StoreError>> {
            self.0.compare_and_set(before, after)
        }

        fn compare_and_set_many<'a>(
            &'a self,
            writes: &'a [(&'a Job, &'a Job)],
        ) -> BoxFuture<'a, Result<Vec<Result<bool, StoreError>>, StoreError>> {
            self.0.compare_and_set_many(writes)
        }

        fn mark_dispatched<'a>(
            &'a self,
            _: &'a [crate::ports::DispatchMark],
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            async { Ok(()) }.boxed()
        }

        fn archive<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), StoreError>> {
            self.0.archive(job)
        }

        fn archive_many<'a>(
            &'a self,
            jobs: &'a [&'a Job],
        ) -> BoxFuture<'a, Result<Vec<Result<(), StoreError>>, StoreError>> {
            self.0.archive_many(jobs)
        }

        fn load_history<'a>(
            &'a self,
            id: &'a JobId,
        ) -> BoxFuture<'a, Result<Option<HistoryRecord>, StoreError>> {
            self.0.load_history(id)
        }

        fn ended_jobs<'a>(
            &'a self,
            after: Option<&'a str>,
            limit: i64,
        ) -> BoxFuture<'a, Result<Found, StoreError>> {
            self.0.ended_jobs(after, limit)
        }

        fn jobs_needing_attention<'a>(
            &'a self,
            now: Timestamp,
            cutoff: Timestamp,
            after: Option<&'a str>,
            limit: i64,
        ) -> BoxFuture<'a, Result<Found, StoreError>> {
            self.0.jobs_needing_attention(now, cutoff, after, limit)
        }

        fn get_machine<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<Machine>, StoreError>> {
            self.0.get_machine(id)
        }

        fn get_pipeline<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<Pipeline>, StoreError>> {
            self.0.get_pipeline(id)
        }

        fn job_bytes(&self, job: &Job) -> Result<usize, StoreError> {
            self.0.job_bytes(job)
        }

        fn server_time(
            &self,
        ) -> BoxFuture<'_, Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>> {
            self.0.server_time()
        }

        fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
            self.0.ping()
        }
    }

    #[tokio::test]
    async fn the_suite_names_the_checks_a_store_that_forgets_marks_fails() {
        let memory = MemoryStore::new();
        let failed = failures(&ForgetsMarks(memory.clone()), &memory).await;
        assert_eq!(
            failed,
            [
                "mark_dispatched_marks_only_the_named_attempts_and_keeps_the_version",
                "mark_dispatched_of_another_run_or_stage_changes_nothing",
                "marks_of_many_jobs_go_in_one_call_and_a_stale_one_stops_none",
                "a_mark_survives_a_write_from_an_earlier_read_that_leaves_its_task_alone",
                "a_mark_survives_a_write_from_an_earlier_read_that_completes_its_attempt",
                "a_mark_does_not_carry_over_to_the_retry_of_its_attempt",
                "marks_on_a_wide_stage_land_and_survive_a_later_write",
            ]
        );
    }
}
