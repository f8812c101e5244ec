//! Removing what a run declared on the broker: its queues and exchanges, by prefix. The
//! service never deletes its topology, so the tools do it themselves, with lapin.

use job_manager::amqp::Names;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

/// Deletes the queues (those of `worker_ids` too) and exchanges under `prefix`, best effort.
pub async fn delete_topology(url: &str, prefix: &str, worker_ids: &[&str]) {
    let names = Names::new(prefix);
    let Ok(connection) = job_manager_worker::connect(url, "job-manager-tools cleanup").await else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        let mut queues = vec![names.results_queue(), names.dead_queue()];
        queues.extend(worker_ids.iter().map(|w| names.worker_queue(w)));
        for queue in queues {
            let _ = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        }
        let exchanges = [
            names.dispatch_exchange(),
            names.events_exchange(),
            names.dead_exchange(),
        ];
        for exchange in exchanges {
            let _ = channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await;
        }
        // Closed before the connection: closing the connection with the channel open made lapin
        // log a connection error at the end of a chaos run.
        let _ = channel.close(200, "cleanup".into()).await;
    }
    let _ = connection.close(200, "cleanup".into()).await;
}
