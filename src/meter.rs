//! Prometheus metrics: the names, the recording helpers, and the exposition for `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Jobs started.
pub const JOBS_STARTED: &str = "job_manager_jobs_started_total";
/// Jobs ended, by `status`.
pub const JOBS_ENDED: &str = "job_manager_jobs_ended_total";
/// Active jobs: pending, running, paused, held (across replicas: counted in the database at scrape time).
pub const JOBS_ACTIVE: &str = "job_manager_jobs_active";
/// Task attempts published, by `worker`.
pub const TASKS_DISPATCHED: &str = "job_manager_tasks_dispatched_total";
/// Tasks that got their result, by `worker`.
pub const TASKS_COMPLETED: &str = "job_manager_tasks_completed_total";
/// Task attempts dispatched again after an error or a timeout, by `worker`.
pub const TASKS_RETRIED: &str = "job_manager_tasks_retried_total";
/// Task attempts that passed their deadline, by `worker`.
pub const TASKS_TIMED_OUT: &str = "job_manager_tasks_timed_out_total";
/// Tasks that failed in a stage that holds and were skipped with an operator's outputs, by `worker`.
pub const TASKS_SKIPPED: &str = "job_manager_tasks_skipped_total";
/// Seconds from a stage's start to its end, by `worker`.
pub const STAGE_DURATION: &str = "job_manager_stage_duration_seconds";
/// Seconds from a result being taken from the queue to the next dispatch being confirmed.
pub const RESULT_TO_DISPATCH: &str = "job_manager_result_to_dispatch_seconds";
/// Results acknowledged without effect, by `reason`.
pub const RESULTS_IGNORED: &str = "job_manager_results_ignored_total";
/// Results rejected into the dead-letter queue.
pub const DEAD_LETTERED: &str = "job_manager_messages_dead_lettered_total";
/// Compare-and-set writes that lost a race.
pub const CAS_CONFLICTS: &str = "job_manager_cas_conflicts_total";
/// Outbox marks not written because their tasks answered (or the job ended) before
/// their time came (docs/consistency.md, "The outbox").
pub const MARKS_SKIPPED: &str = "job_manager_marks_skipped_total";
/// Events applied per job write (how much coalescing saves: one write for this many events).
pub const EVENTS_PER_WRITE: &str = "job_manager_events_per_write";
/// Compare-and-sets of different jobs sent in one store command (the group commit: how many
/// writes share a round trip).
pub const WRITES_PER_COMMIT: &str = "job_manager_writes_per_commit";
/// Jobs moved to history in one store call (the group commit of archives).
pub const ARCHIVES_PER_COMMIT: &str = "job_manager_archives_per_commit";
/// Reconnections to RabbitMQ.
pub const AMQP_RECONNECTS: &str = "job_manager_amqp_reconnects_total";
/// Results the store refused as sent, recorded as failed attempts instead.
pub const RESULTS_REFUSED: &str = "job_manager_results_refused_total";
/// Jobs whose handling failed in a sweep (skipped; the next sweep tries again).
pub const SWEEP_ERRORS: &str = "job_manager_sweep_errors_total";
/// Events applied by a winning compare-and-set, by `from`: `copy` when the write started from
/// the job as this replica last wrote it, `read` when the job was read first. The share of
/// `copy` is how often a replica's own copy saved a read (README, "Performance").
pub const EVENTS_APPLIED: &str = "job_manager_events_applied_total";
/// Seconds the coordinator spends in each step of handling an event, by `step`: `load` (read the
/// job), `apply` (the engine and the size check), `write` (the compare-and-set), `publish`
/// (dispatches until confirmed), `mark` (the outbox mark), `archive`, `notify` (a job event).
/// Where a hop's time goes (README, "Performance").
pub const STEP_SECONDS: &str = "job_manager_step_seconds";
/// Result partitions this replica took deliveries from in the last look (docs/scaling.md,
/// "Result partitions"); 0 when it consumes none.
pub const PARTITIONS_ACTIVE: &str = "job_manager_result_partitions_active";
/// Result partitions this replica gave up to other replicas, beyond its fair share.
pub const PARTITIONS_RELEASED: &str = "job_manager_result_partitions_released_total";
/// Stored documents that do not decode, by `collection` (skipped and logged).
pub const UNDECODABLE: &str = "job_manager_documents_undecodable_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle. `None` if
/// another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let stage_buckets = [0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];
            let batch_buckets = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(RESULT_TO_DISPATCH.into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(STAGE_DURATION.into()), &stage_buckets)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(EVENTS_PER_WRITE.into()), &batch_buckets)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(WRITES_PER_COMMIT.into()),
                        &batch_buckets,
                    )
                })
                .and_then(|b| {
                    let name = Matcher::Full(ARCHIVES_PER_COMMIT.into());
                    b.set_buckets_for_metric(name, &batch_buckets)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(STEP_SECONDS.into()), &buckets)
                })
                .and_then(PrometheusBuilder::install_recorder)
                .ok()
        })
        .as_ref()
}

/// The Prometheus text exposition, with the active-jobs gauge set to `active`.
pub fn render(active: Option<u64>) -> String {
    if let Some(active) = active {
        gauge!(JOBS_ACTIVE).set(active as f64);
    }
    install().map(PrometheusHandle::render).unwrap_or_default()
}

pub fn job_started() {
    counter!(JOBS_STARTED).increment(1);
}

pub fn job_ended(status: &'static str) {
    counter!(JOBS_ENDED, "status" => status).increment(1);
}

pub fn tasks_dispatched(worker: &str, count: usize) {
    counter!(TASKS_DISPATCHED, "worker" => worker.to_owned()).increment(count as u64);
}

pub fn task_completed(worker: &str) {
    counter!(TASKS_COMPLETED, "worker" => worker.to_owned()).increment(1);
}

pub fn task_retried(worker: &str) {
    counter!(TASKS_RETRIED, "worker" => worker.to_owned()).increment(1);
}

pub fn task_timed_out(worker: &str) {
    counter!(TASKS_TIMED_OUT, "worker" => worker.to_owned()).increment(1);
}

pub fn task_skipped(worker: &str) {
    counter!(TASKS_SKIPPED, "worker" => worker.to_owned()).increment(1);
}

pub fn stage_duration(worker: &str, duration: Duration) {
    histogram!(STAGE_DURATION, "worker" => worker.to_owned()).record(duration.as_secs_f64());
}

pub fn result_to_dispatch(duration: Duration) {
    histogram!(RESULT_TO_DISPATCH).record(duration.as_secs_f64());
}

pub fn result_ignored(reason: &'static str) {
    counter!(RESULTS_IGNORED, "reason" => reason).increment(1);
}

pub fn dead_lettered() {
    counter!(DEAD_LETTERED).increment(1);
}

pub fn job_written(events: usize) {
    histogram!(EVENTS_PER_WRITE).record(events as f64);
}

/// Records how many compare-and-sets one store command carried (see [`WRITES_PER_COMMIT`]).
pub fn commit_size(writes: usize) {
    histogram!(WRITES_PER_COMMIT).record(writes as f64);
}

/// Records how many jobs one archive call moved (see [`ARCHIVES_PER_COMMIT`]).
pub fn archive_commit_size(jobs: usize) {
    histogram!(ARCHIVES_PER_COMMIT).record(jobs as f64);
}

/// Records how long `step` took (see [`STEP_SECONDS`]).
pub fn step(step: &'static str, took: Duration) {
    histogram!(STEP_SECONDS, "step" => step).record(took.as_secs_f64());
}

/// Runs `work`, recording how long it took as `step`.
pub async fn timed<T>(step_name: &'static str, work: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let output = work.await;
    step(step_name, started.elapsed());
    output
}

pub fn events_applied(from: &'static str, events: usize) {
    counter!(EVENTS_APPLIED, "from" => from).increment(events as u64);
}

pub fn cas_conflict() {
    counter!(CAS_CONFLICTS).increment(1);
}

pub fn mark_skipped() {
    counter!(MARKS_SKIPPED).increment(1);
}

pub fn result_refused() {
    counter!(RESULTS_REFUSED).increment(1);
}

pub fn sweep_error() {
    counter!(SWEEP_ERRORS).increment(1);
}

pub fn undecodable(collection: &'static str) {
    counter!(UNDECODABLE, "collection" => collection).increment(1);
}

pub fn amqp_reconnect() {
    counter!(AMQP_RECONNECTS).increment(1);
}

pub fn partitions_active(count: usize) {
    gauge!(PARTITIONS_ACTIVE).set(count as f64);
}

pub fn partition_released() {
    counter!(PARTITIONS_RELEASED).increment(1);
}
