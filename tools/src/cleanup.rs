//! Removing what a run left: the queues and exchanges it declared on the broker, by prefix,
//! and its database. The service never deletes its topology or its data, so the tools do it
//! themselves, with lapin and the MongoDB driver.

use job_manager::amqp::Names;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

/// Deletes the queues (those of `worker_ids` too) and exchanges under `prefix`, best effort.
pub async fn delete_topology(url: &str, prefix: &str, worker_ids: &[&str]) {
    let names = Names::new(prefix);
    let Ok(connection) = job_manager_worker::connect(url, "job-manager-tools cleanup").await else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        let mut queues = names.service_queues();
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

/// Where the run's leftovers are.
#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    /// AMQP URL of the broker.
    #[arg(long, env = "JOB_MANAGER_AMQP_URL", hide_env_values = true)]
    amqp_url: String,
    /// The run's queue and exchange prefix.
    #[arg(long)]
    prefix: String,
    /// Worker ids whose queues to delete as well.
    #[arg(long, value_delimiter = ',')]
    workers: Vec<String>,
    /// MongoDB URI.
    #[arg(long, env = "JOB_MANAGER_MONGODB_URI", hide_env_values = true)]
    mongodb_uri: String,
    /// The run's database, dropped.
    #[arg(long)]
    database: String,
}

/// Deletes the run's topology and drops its database; the drop's failure is the command's.
pub async fn run(args: CleanupArgs) -> anyhow::Result<()> {
    let workers: Vec<&str> = args.workers.iter().map(String::as_str).collect();
    delete_topology(&args.amqp_url, &args.prefix, &workers).await;
    let store = job_manager::store::Store::connect(&args.mongodb_uri, &args.database).await?;
    let dropped = tokio::time::timeout(std::time::Duration::from_secs(15), store.database().drop());
    dropped.await??;
    store.shutdown().await;
    Ok(())
}
