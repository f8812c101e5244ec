//! The job runs a worker has heard were aborted, so it skips their dispatches (the coordinator
//! would ignore their results anyway). Bounded: the oldest are forgotten first.

use std::collections::{HashSet, VecDeque};

/// Runs remembered at most.
const REMEMBERED: usize = 10_000;

/// `(job_id, run_id)`; a run of `None` (an event from a coordinator older than run ids) stands
/// for every run of the job.
type Run = (String, Option<String>);

#[derive(Debug, Default)]
pub(crate) struct Aborted {
    runs: HashSet<Run>,
    order: VecDeque<Run>,
}

impl Aborted {
    pub(crate) fn insert(&mut self, job_id: &str, run_id: Option<&str>) {
        let run = (job_id.to_owned(), run_id.map(str::to_owned));
        if self.runs.insert(run.clone()) {
            self.order.push_back(run);
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.runs.remove(&oldest);
            }
        }
    }

    /// Whether the run `run_id` of `job_id` was aborted.
    pub(crate) fn contains(&self, job_id: &str, run_id: &str) -> bool {
        let job = job_id.to_owned();
        self.runs.contains(&(job.clone(), Some(run_id.to_owned())))
            || self.runs.contains(&(job, None))
    }
}

/// Whether an abort of `(job_id, run_id)` covers a task of `task_job` and `task_run`.
pub(crate) fn covers(job_id: &str, run_id: Option<&str>, task_job: &str, task_run: &str) -> bool {
    job_id == task_job && run_id.is_none_or(|run| run == task_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aborted_run_does_not_cover_a_later_run_of_the_same_job() {
        let mut aborted = Aborted::default();
        aborted.insert("job", Some("run-1"));
        assert!(aborted.contains("job", "run-1"));
        assert!(!aborted.contains("job", "run-2"));
        assert!(!aborted.contains("other", "run-1"));
        assert!(covers("job", Some("run-1"), "job", "run-1"));
        assert!(!covers("job", Some("run-1"), "job", "run-2"));
    }

    #[test]
    fn an_event_without_a_run_covers_every_run() {
        let mut aborted = Aborted::default();
        aborted.insert("job", None);
        assert!(aborted.contains("job", "any"));
        assert!(covers("job", None, "job", "any"));
    }

    #[test]
    fn the_oldest_runs_are_forgotten_first() {
        let mut aborted = Aborted::default();
        for n in 0..=REMEMBERED {
            aborted.insert(&format!("job-{n}"), Some("r"));
        }
        assert!(!aborted.contains("job-0", "r"));
        assert!(aborted.contains("job-1", "r"));
        assert!(aborted.contains(&format!("job-{REMEMBERED}"), "r"));
    }
}
