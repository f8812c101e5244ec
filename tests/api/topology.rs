//! The dead-letter queue's bound on the real broker, and start-up over a dead-letter queue that an
//! earlier version declared without one.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use job_manager::amqp::publisher::{Outgoing, Publisher};
use job_manager::amqp::topology::{self, DeadQueue, DeadQueueBound};
use job_manager::amqp::{self, Names};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};

use crate::helpers::{amqp_url, delete_topology, spawn_app_with};

async fn connect() -> Connection {
    amqp::connect(&amqp_url(), "job-manager-tests")
        .await
        .expect("amqp")
}

fn fresh_names() -> Names {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    Names::new(format!("jm-test-{id}"))
}

/// Runs `test`, then removes the queues and exchanges under `names` whether it passed or not.
async fn removing_queues(names: &Names, test: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(test).catch_unwind().await;
    let connection = connect().await;
    let channel = connection.create_channel().await.expect("channel");
    delete_topology(&channel, names, &[]).await;
    let _ = connection.close(200, "cleanup".into()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Messages ready in `queue`, asked with a passive declare.
async fn depth(connection: &Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .expect("passive declare");
    let _ = channel.close(200, "done".into()).await;
    declared.message_count()
}

/// Publishes `bodies` to the dead-letter exchange, each confirmed by the broker.
async fn dead_letter(connection: &Connection, names: &Names, bodies: &[Vec<u8>]) {
    let publisher = Publisher::open(connection).await.expect("publisher");
    for body in bodies {
        publisher
            .publish(Outgoing {
                exchange: names.dead_exchange(),
                routing_key: String::new(),
                body: body.clone(),
                properties: BasicProperties::default().with_delivery_mode(2),
            })
            .await
            .expect("publish");
    }
}

async fn first_body(connection: &Connection, queue: &str) -> Vec<u8> {
    let channel = connection.create_channel().await.expect("channel");
    let got = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("a message");
    let _ = channel.close(200, "done".into()).await;
    got.delivery.data
}

#[tokio::test]
async fn the_dead_letter_queue_drops_its_oldest_beyond_the_bound() {
    let by_count = fresh_names();
    let by_bytes = fresh_names();
    removing_queues(
        &by_count,
        removing_queues(&by_bytes, async {
            let connection = connect().await;

            let bound = DeadQueueBound {
                max_length: 5,
                ..DeadQueueBound::default()
            };
            let declared = topology::declare_bounded(&connection, &by_count, bound).await;
            assert_eq!(declared.expect("declare"), DeadQueue::Bounded);
            let bodies: Vec<Vec<u8>> = (0..8).map(|n| format!("poison {n}").into_bytes()).collect();
            dead_letter(&connection, &by_count, &bodies).await;
            assert_eq!(depth(&connection, &by_count.dead_queue()).await, 5);
            assert_eq!(
                first_body(&connection, &by_count.dead_queue()).await,
                b"poison 3"
            );
            // Declaring again with the same bound is harmless.
            let again = topology::declare_bounded(&connection, &by_count, bound).await;
            assert_eq!(again.expect("redeclare"), DeadQueue::Bounded);

            let bound = DeadQueueBound {
                max_length: 1000,
                max_bytes: 1000,
            };
            let declared = topology::declare_bounded(&connection, &by_bytes, bound).await;
            assert_eq!(declared.expect("declare"), DeadQueue::Bounded);
            let bodies: Vec<Vec<u8>> = (0..10u8).map(|n| vec![b'a' + n; 300]).collect();
            dead_letter(&connection, &by_bytes, &bodies).await;
            // 3 × 300 bytes fit in 1000, a fourth would not.
            assert_eq!(depth(&connection, &by_bytes.dead_queue()).await, 3);
            assert_eq!(
                first_body(&connection, &by_bytes.dead_queue()).await,
                vec![b'h'; 300]
            );

            let _ = connection.close(200, "done".into()).await;
        }),
    )
    .await;
}

#[tokio::test]
async fn the_service_bounds_its_dead_letter_queue_by_default() {
    let names = fresh_names();
    removing_queues(&names, async {
        let prefix = names.prefix().to_owned();
        let app = spawn_app_with(|config| config.prefix = prefix, true).await;
        // Declaring with the default bound again succeeds only when the arguments match.
        let connection = connect().await;
        let declared = topology::declare(&connection, &names)
            .await
            .expect("declare");
        assert_eq!(declared, DeadQueue::Bounded);
        let _ = connection.close(200, "done".into()).await;
        app.cleanup().await;
    })
    .await;
}

#[tokio::test]
async fn a_dead_letter_queue_declared_without_a_bound_does_not_stop_the_service() {
    let names = fresh_names();
    removing_queues(&names, async {
        // As an earlier version declared it: durable, no arguments.
        let connection = connect().await;
        let channel = connection.create_channel().await.expect("channel");
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(names.dead_queue().into(), durable, FieldTable::default())
            .await
            .expect("declare the old queue");
        let _ = channel.close(200, "done".into()).await;
        let declared = topology::declare(&connection, &names)
            .await
            .expect("declare");
        assert_eq!(declared, DeadQueue::Existing);

        let prefix = names.prefix().to_owned();
        let app = spawn_app_with(|config| config.prefix = prefix, true).await;
        let (status, body) = app.get("/health/ready").await;
        assert_eq!(status, 200, "{body}");
        // Poison results still reach the old queue through the dead-letter exchange.
        let publisher = Publisher::open(&app.amqp).await.expect("publisher");
        publisher
            .publish(Outgoing {
                exchange: String::new(),
                routing_key: names.results_queue(),
                body: b"not json".to_vec(),
                properties: BasicProperties::default().with_delivery_mode(2),
            })
            .await
            .expect("publish");
        let dead = app.take(&names.dead_queue(), Duration::from_secs(10)).await;
        assert_eq!(dead.expect("dead-lettered").delivery.data, b"not json");
        let _ = connection.close(200, "done".into()).await;
        app.cleanup().await;
    })
    .await;
}
