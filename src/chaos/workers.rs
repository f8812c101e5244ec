//! The chaos run's in-process workers: deterministic outputs, optionally every result twice.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::check::chaos_outputs;
use crate::amqp::publisher::Outgoing;
use crate::amqp::{self, Names, Publisher};
use crate::demo;
use crate::messages::{RESULT_TYPE, StageDispatch, StageResult};
use crate::worker::{self, WorkerOutput};

/// Starts the chaos workers; with `duplicates`, each result is also published a second time.
pub fn spawn_workers(
    url: &str,
    names: &Names,
    duplicates: bool,
    shutdown: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    let copier: Arc<Mutex<Option<(lapin::Connection, Publisher)>>> = Arc::new(Mutex::new(None));
    for worker_id in demo::WORKERS {
        let (url, names, shutdown, copier) = (
            url.to_owned(),
            names.clone(),
            shutdown.clone(),
            copier.clone(),
        );
        let reply_to = names.results_queue();
        let amqp_url = url.clone();
        let handler = move |dispatch: StageDispatch| {
            let (copier, reply_to, amqp_url) = (copier.clone(), reply_to.clone(), amqp_url.clone());
            async move {
                let outputs = chaos_outputs(&dispatch)?;
                if duplicates {
                    let copy = StageResult {
                        task_id: dispatch.task_id.clone(),
                        job_id: dispatch.job_id.clone(),
                        run_id: Some(dispatch.run_id.clone()),
                        outputs: outputs.clone(),
                        log: None,
                        error: None,
                    };
                    publish_copy(&copier, &amqp_url, &reply_to, &copy).await;
                }
                Ok(WorkerOutput::new(outputs))
            }
        };
        set.spawn(
            async move { worker::serve(&url, &names, worker_id, 32, handler, shutdown).await },
        );
    }
    set
}

/// Publishes the extra copy of a result; a failure only costs the copy.
async fn publish_copy(
    copier: &Mutex<Option<(lapin::Connection, Publisher)>>,
    url: &str,
    queue: &str,
    result: &StageResult,
) {
    let mut guard = copier.lock().await;
    if guard
        .as_ref()
        .is_none_or(|(c, p)| !c.status().connected() || !p.channel().status().connected())
    {
        *guard = None;
        if let Ok(connection) = amqp::connect(url, "chaos duplicates").await
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
