//! The benchmark's no-op workers, on the `job-manager-worker` crate, and the latency they see
//! between stages: from a task's handler returning (its result about to be published) to the
//! first dispatch of a later stage of the same job reaching a worker. That is the coordinator's
//! whole part between two stages (take the result, write the job, publish the next dispatch
//! with a confirm) plus the broker's two hops, as a pipeline experiences it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use job_manager_worker::{Dispatch, Task, Worker};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::chaos::chaos_outputs;

/// Workers of the pipelines the benchmark registers besides the seed's.
pub const FAN_SOURCE: &str = "fan-source";
pub const FAN_SINK: &str = "fan-sink";
/// Nobody serves it: jobs on it stay active (the memory run).
pub const IDLE: &str = "idle-nobody-serves";

/// Stage-to-stage latencies seen by the workers, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    inner: Arc<Mutex<Samples>>,
}

#[derive(Debug, Default)]
struct Samples {
    /// Per job: the stage whose result was last returned, and when.
    returned: HashMap<String, (String, Instant)>,
    samples_ms: Vec<f64>,
}

impl Latency {
    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handler of `dispatch` returns now.
    fn returned(&self, dispatch: &Dispatch) {
        let now = Instant::now();
        self.lock()
            .returned
            .insert(dispatch.job_id.clone(), (dispatch.stage_id.clone(), now));
    }

    /// `dispatch` reached a worker now: a sample if it is the first of a later stage.
    fn arrived(&self, dispatch: &Dispatch) {
        let now = Instant::now();
        let mut samples = self.lock();
        let later = samples
            .returned
            .get(&dispatch.job_id)
            .is_some_and(|(stage, _)| dispatch.stage_id > *stage);
        if later && let Some((_, at)) = samples.returned.remove(&dispatch.job_id) {
            samples
                .samples_ms
                .push(now.duration_since(at).as_secs_f64() * 1000.0);
        }
    }

    /// The samples so far, leaving none.
    pub fn take(&self) -> Vec<f64> {
        let mut samples = self.lock();
        samples.returned.clear();
        std::mem::take(&mut samples.samples_ms)
    }
}

/// What the no-op workers return: the seed's shape for the demo workers (as the chaos run's
/// workers do); for the width runs, `fan-source` returns `width` outputs and `fan-sink` `null`.
fn outputs(dispatch: &Dispatch, width: usize) -> Result<Value, String> {
    match dispatch.worker.id.as_str() {
        FAN_SOURCE => Ok(Value::Array(
            (0..width).map(|i| json!({"item": i})).collect(),
        )),
        FAN_SINK => Ok(Value::Null),
        _ => chaos_outputs(dispatch),
    }
}

/// Starts a no-op worker for each of `worker_ids` until `shutdown`, recording into `latency`.
pub fn spawn(
    url: &str,
    prefix: &str,
    worker_ids: &[&str],
    width: usize,
    latency: &Latency,
    shutdown: &CancellationToken,
) -> JoinSet<()> {
    let mut workers = JoinSet::new();
    for worker_id in worker_ids {
        let latency = latency.clone();
        let handler = move |task: Task| {
            let latency = latency.clone();
            async move {
                latency.arrived(task.dispatch());
                let outputs = outputs(task.dispatch(), width);
                latency.returned(task.dispatch());
                outputs
            }
        };
        let worker = Worker::new(*worker_id, handler)
            .prefix(prefix)
            .prefetch(128);
        let (url, stop) = (url.to_owned(), shutdown.clone());
        workers.spawn(async move { worker.serve(&url, stop.cancelled_owned()).await });
    }
    workers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(job: &str, stage: &str) -> Dispatch {
        serde_json::from_value(json!({
            "task_id": "0".repeat(32), "job_id": job, "run_id": "r", "machine_id": "m",
            "pipeline_id": "p", "stage_id": stage, "worker": {"id": "w", "name": "w"},
            "inputs": {}, "configs": {}, "attempt": 1, "deadline": "2030-01-01T00:00:00Z"
        }))
        .expect("a dispatch")
    }

    #[test]
    fn a_sample_spans_a_result_to_the_first_dispatch_of_a_later_stage_of_its_job() {
        let latency = Latency::default();
        latency.returned(&dispatch("a", "03"));
        latency.arrived(&dispatch("b", "04"));
        latency.arrived(&dispatch("a", "03"));
        assert!(
            latency.lock().samples_ms.is_empty(),
            "other jobs and retries do not count"
        );
        latency.arrived(&dispatch("a", "04"));
        latency.arrived(&dispatch("a", "04"));
        let samples = latency.take();
        assert_eq!(samples.len(), 1, "only the first dispatch of the stage");
        assert!(samples[0] >= 0.0);
        assert!(latency.take().is_empty());
    }
}
