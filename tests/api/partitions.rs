//! Result partitions on the real RabbitMQ: two replicas' consumers share the partitions, one
//! replica at a time per partition, the load spreads, and when a replica dies holding results,
//! the other takes its partitions and every result is handled, none twice after an ack.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use job_manager::amqp::consumer::{self, Queues, REBALANCE_EVERY};
use job_manager::amqp::publisher::Outgoing;
use job_manager::amqp::{self, Names, Publisher, topology};
use job_manager::ports::{DeliveryHandler, Settle};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::helpers::{amqp_url, delete_topology};

/// One delivery as a replica saw it.
#[derive(Debug, Clone)]
struct Seen {
    replica: usize,
    partition: u16,
    seq: u64,
    at: Instant,
}

/// Records every delivery; while `hang` is set, holds deliveries without settling them, like a
/// replica that dies in the middle of its work.
struct Recorder {
    replica: usize,
    seen: Arc<Mutex<Vec<Seen>>>,
    hang: Arc<std::sync::atomic::AtomicBool>,
}

impl DeliveryHandler for Recorder {
    fn handle<'a>(
        &'a self,
        body: &'a [u8],
        _held: &'a (dyn Fn() -> bool + Send + Sync),
        shutdown: &'a CancellationToken,
    ) -> BoxFuture<'a, Settle> {
        async move {
            let text = String::from_utf8_lossy(body);
            let (partition, seq) = text.split_once(':').expect("partition:seq");
            if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
                shutdown.cancelled().await;
                return Settle::Abandon;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            let seen = Seen {
                replica: self.replica,
                partition: partition.parse().expect("partition"),
                seq: seq.parse().expect("seq"),
                at: Instant::now(),
            };
            self.seen.lock().expect("seen").push(seen);
            Settle::Ack
        }
        .boxed()
    }
}

/// A replica's consumer on its own connection.
struct Replica {
    connection: lapin::Connection,
    shutdown: CancellationToken,
    hang: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Result<(), lapin::Error>>,
}

async fn replica(names: &Names, index: usize, seen: &Arc<Mutex<Vec<Seen>>>) -> Replica {
    let connection = amqp::connect(&amqp_url(), "partitions test")
        .await
        .expect("amqp");
    let channel = connection.create_channel().await.expect("channel");
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = Arc::new(Recorder {
        replica: index,
        seen: seen.clone(),
        hang: hang.clone(),
    });
    let queues = Queues {
        shared: names.results_queue(),
        partitions: names.result_partitions(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer::run(
        channel,
        queues,
        handler,
        16,
        shutdown.clone(),
    ));
    Replica {
        connection,
        shutdown,
        hang,
        task,
    }
}

/// Publishes one message to every partition, numbered `seq`.
async fn publish_round(publisher: &Publisher, names: &Names, seq: u64) {
    let messages = names
        .result_partitions()
        .into_iter()
        .enumerate()
        .map(|(partition, queue)| Outgoing {
            exchange: String::new(),
            routing_key: queue,
            body: format!("{partition}:{seq}").into_bytes(),
            properties: lapin::BasicProperties::default().with_delivery_mode(2),
        })
        .collect();
    publisher.publish_all(messages).await.expect("publish");
}

/// Which replicas served each partition among the deliveries after `since`.
fn owners(seen: &[Seen], since: Instant) -> BTreeMap<u16, BTreeSet<usize>> {
    let mut owners: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.at >= since) {
        owners.entry(s.partition).or_default().insert(s.replica);
    }
    owners
}

#[tokio::test]
async fn partitions_spread_over_replicas_one_at_a_time_and_fail_over() {
    let names = Names::new(format!(
        "jm-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    let connection = amqp::connect(&amqp_url(), "partitions test")
        .await
        .expect("amqp");
    topology::declare(&connection, &names)
        .await
        .expect("declare");
    let scenario = tokio::spawn(scenario(names.clone()));
    let outcome = scenario.await;
    let channel = connection.create_channel().await.expect("channel");
    delete_topology(&channel, &names, &[]).await;
    let _ = connection.close(200, "done".into()).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Waits until `count` replicas consume: a partition counts only its active consumer, the
/// shared queue counts every replica.
async fn wait_for_consumers(connection: &lapin::Connection, names: &Names, count: u32) {
    let probe = connection.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let started = Instant::now();
    loop {
        let shared = names.results_queue().into();
        let queue = probe
            .queue_declare(shared, passive, FieldTable::default())
            .await
            .expect("passive declare");
        if queue.consumer_count() == count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "both replicas consume: {} consumers",
            queue.consumer_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `count` distinct results were handled, for at most 15 s.
async fn wait_until_handled(seen: &Mutex<Vec<Seen>>, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let handled: BTreeSet<(u16, u64)> = seen
            .lock()
            .expect("seen")
            .iter()
            .map(|s| (s.partition, s.seq))
            .collect();
        if handled.len() as u64 == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} results handled after replica 0 died",
            handled.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario(names: Names) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let a = replica(&names, 0, &seen).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = replica(&names, 1, &seen).await;
    let publisher = Publisher::open(&a.connection).await.expect("publisher");
    wait_for_consumers(&a.connection, &names, 2).await;

    // Load for three looks: the first replica, active on all, gives half away.
    let mut seq = 0;
    let settled = Instant::now() + REBALANCE_EVERY * 2 + Duration::from_millis(500);
    let until = settled + REBALANCE_EVERY * 2;
    while Instant::now() < until {
        publish_round(&publisher, &names, seq).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let published_before = seq;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spread = owners(&seen.lock().expect("seen"), settled);
    assert_eq!(spread.len(), names.result_partitions().len());
    for (partition, replicas) in &spread {
        assert_eq!(
            replicas.len(),
            1,
            "partition {partition} served by {replicas:?} at once"
        );
    }
    let of_a = spread.values().filter(|r| r.contains(&0)).count();
    assert!(
        (6..=10).contains(&of_a),
        "replica 0 serves {of_a} of 16 partitions: {spread:?}"
    );

    // Replica 0 hangs on what it gets, then dies: its results go to replica 1.
    a.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let died = Instant::now();
    for _ in 0..5 {
        publish_round(&publisher, &names, seq).await;
        seq += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The connection goes first, as when the process dies: its unsettled results return to
    // their queues.
    let _ = a.connection.close(320, "killed".into()).await;
    a.shutdown.cancel();
    let _ = a.task.await;
    // Every result published, those replica 0 held included, is handled.
    wait_until_handled(&seen, seq * 16).await;
    let seen = seen.lock().expect("seen").clone();
    let after = owners(&seen, died);
    assert!(
        after.values().all(|r| r == &BTreeSet::from([1])),
        "{after:?}"
    );
    let distinct: BTreeSet<(u16, u64)> = seen.iter().map(|s| (s.partition, s.seq)).collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "a result handled and acked twice"
    );
    assert!(published_before > 0);
    b.shutdown.cancel();
    let _ = b.task.await;
    let _ = b.connection.close(200, "done".into()).await;
}
