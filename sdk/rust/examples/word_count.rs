//! Example worker: counts the words of a text given as the input field `text`, like the Python
//! SDK's `examples/word_count.py`.
//!
//! ```sh
//! JOB_MANAGER_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p job-manager-worker --example word_count
//! ```

use std::collections::BTreeSet;

use job_manager_worker::{Task, Worker, amqp_url_from_env};
use serde::Serialize;

/// The outputs: one object, with the fields the stage's worker declares.
#[derive(Serialize)]
struct Counted {
    words: usize,
    distinct: usize,
}

async fn word_count(task: Task) -> Result<Counted, String> {
    let mut text = task.input_str("text")?.to_owned();
    if task.configs().get("lowercase") == Some(&serde_json::Value::Bool(true)) {
        text = text.to_lowercase();
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let distinct: BTreeSet<&str> = words.iter().copied().collect();
    task.log(format!("counted {} words", words.len()));
    Ok(Counted {
        words: words.len(),
        distinct: distinct.len(),
    })
}

#[tokio::main]
async fn main() {
    // JOB_MANAGER_PREFIX (default `job-manager`) names the queues; warnings go to stderr.
    let worker = Worker::new("word-count", word_count).prefetch(4);
    println!("consuming {}", worker.queue());
    worker
        .serve(&amqp_url_from_env(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
}
