//! One dispatched task, as a handler sees it.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::flag::Flag;
use crate::wire::Dispatch;

/// A task handed to a handler: the dispatch, a log, and its cancellation. Cheap to clone;
/// clones share the log and the cancellation.
#[derive(Debug, Clone)]
pub struct Task {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dispatch: Dispatch,
    log: Mutex<Vec<String>>,
    cancelled: Flag,
}

impl Task {
    /// A task for `dispatch` (the worker builds these; tests of handlers may too).
    pub fn new(dispatch: Dispatch) -> Self {
        Self {
            inner: Arc::new(Inner {
                dispatch,
                log: Mutex::new(Vec::new()),
                cancelled: Flag::default(),
            }),
        }
    }

    /// The whole dispatch: ids, stage, worker, attempt and deadline.
    pub fn dispatch(&self) -> &Dispatch {
        &self.inner.dispatch
    }

    pub fn task_id(&self) -> &str {
        &self.inner.dispatch.task_id
    }

    pub fn job_id(&self) -> &str {
        &self.inner.dispatch.job_id
    }

    pub fn run_id(&self) -> &str {
        &self.inner.dispatch.run_id
    }

    /// The task's input fields.
    pub fn inputs(&self) -> &Map<String, Value> {
        &self.inner.dispatch.inputs
    }

    /// The task's configs: the worker's overlaid by the machine's.
    pub fn configs(&self) -> &Map<String, Value> {
        &self.inner.dispatch.configs
    }

    /// The input `name` as text, or an error a handler can return as it is.
    pub fn input_str(&self, name: &str) -> Result<&str, String> {
        self.inputs()
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("input '{name}' is missing or not a string"))
    }

    /// The config `name` as text (a non-string value as its JSON), or `default`.
    pub fn config_text(&self, name: &str, default: &str) -> String {
        match self.configs().get(name) {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => default.to_owned(),
        }
    }

    /// Adds a line to the result's `log` (sent with the result, success or error).
    pub fn log(&self, line: impl Into<String>) {
        let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
        log.push(line.into());
    }

    /// The lines logged so far, joined, or `None`.
    pub fn log_text(&self) -> Option<String> {
        let log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
        (!log.is_empty()).then(|| log.join("\n"))
    }

    /// Whether the task's job was aborted. The worker also drops the handler's future at its
    /// next `.await`; this is for work that does not await, such as a `spawn_blocking` loop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.is_set()
    }

    /// Returns once the task's job is aborted.
    pub async fn cancelled(&self) {
        self.inner.cancelled.wait().await
    }

    pub(crate) fn cancel(&self) {
        self.inner.cancelled.set()
    }
}
