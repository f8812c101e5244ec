//! The chaos run's in-process workers, on the `job-manager-worker` crate: deterministic
//! outputs, optionally every result twice (the copy to the job's partition or to the shared
//! results queue).

use std::sync::Arc;

use job_manager::amqp::publisher::Outgoing;
use job_manager::amqp::{Names, Publisher};
use job_manager::demo;
use job_manager_worker::wire::{RESULT_TYPE, StageResult};
use job_manager_worker::{Dispatch, Task, Worker};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::check::chaos_outputs;

/// A connection and a confirming publisher for the copies, opened on first use and again
/// after a loss.
type Copier = Arc<Mutex<Option<(lapin::Connection, Publisher)>>>;

/// Starts the chaos workers; with `duplicates`, each result is also published a second time.
pub fn spawn_workers(
    url: &str,
    prefix: &str,
    duplicates: bool,
    shutdown: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    let copier = Copier::default();
    let names = Names::new(prefix);
    for worker_id in demo::WORKERS {
        let (copier, names, amqp_url) = (copier.clone(), names.clone(), url.to_owned());
        let handler = move |task: Task| {
            let (copier, names, amqp_url) = (copier.clone(), names.clone(), amqp_url.clone());
            async move {
                let outputs = chaos_outputs(task.dispatch())?;
                if duplicates {
                    let copy = copy_of(task.dispatch(), &outputs);
                    let queue = copy_queue(&names, task.task_id(), task.job_id());
                    publish_copy(&copier, &amqp_url, &queue, &copy).await;
                }
                Ok::<_, String>(outputs)
            }
        };
        let worker = Worker::new(worker_id, handler).prefix(prefix).prefetch(32);
        let (url, stop) = (url.to_owned(), shutdown.clone());
        set.spawn(async move { worker.serve(&url, stop.cancelled_owned()).await });
    }
    set
}

/// Where a copy goes: for half the tasks the job's result partition (the `reply_to` the worker
/// answers to), for the other half the shared results queue, which any replica consumes, so a
/// copy races the original on another replica.
fn copy_queue(names: &Names, task_id: &str, job_id: &str) -> String {
    if task_id.bytes().last().is_some_and(|b| b % 2 == 0) {
        names.results_queue_of(job_id)
    } else {
        names.results_queue()
    }
}

/// The result the worker is about to send, as a second copy.
fn copy_of(dispatch: &Dispatch, outputs: &serde_json::Value) -> StageResult {
    StageResult {
        task_id: dispatch.task_id.clone(),
        job_id: dispatch.job_id.clone(),
        run_id: Some(dispatch.run_id.clone()),
        outputs: outputs.clone(),
        log: None,
        error: None,
    }
}

/// Publishes the extra copy of a result; a failure only costs the copy.
async fn publish_copy(copier: &Copier, url: &str, queue: &str, result: &StageResult) {
    let mut guard = copier.lock().await;
    if guard
        .as_ref()
        .is_none_or(|(c, p)| !c.status().connected() || !p.channel().status().connected())
    {
        *guard = None;
        if let Ok(connection) = job_manager::amqp::connect(url, "chaos duplicates").await
            && let Ok(publisher) = Publisher::open(&connection).await
        {
            *guard = Some((connection, publisher));
        }
    }
    let publisher = guard.as_ref().map(|(_, p)| p.clone());
    drop(guard);
    if let (Some(publisher), Ok(message)) =
        (publisher, Outgoing::json("", queue, RESULT_TYPE, result))
    {
        let _ = publisher.publish(message).await;
    }
}
