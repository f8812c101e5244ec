//! A test that fails still removes what it made: its queues, exchanges and database.

use crate::helpers::{amqp_url, mongodb_uri, spawn_app};

#[tokio::test]
async fn a_test_that_panics_leaves_no_queue_exchange_or_database_behind() {
    let app = spawn_app().await;
    let database = app.store.database().name().to_owned();
    let queues = app.names.service_queues();
    let panicked = tokio::spawn(async move {
        let _app = app;
        panic!("a test fails before its cleanup");
    })
    .await;
    assert!(panicked.is_err_and(|e| e.is_panic()));

    let client = mongodb::Client::with_uri_str(mongodb_uri())
        .await
        .expect("client");
    let names = client.list_database_names().await.expect("databases");
    assert!(!names.contains(&database), "{database} left behind");
    client.shutdown().await;

    let connection = job_manager::amqp::connect(&amqp_url(), "leftovers test")
        .await
        .expect("amqp");
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for queue in queues {
        // A passive declare of a missing queue closes the channel: one channel per queue.
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await;
        assert!(declared.is_err(), "{queue} left behind");
    }
    let _ = connection.close(200, "done".into()).await;
}
