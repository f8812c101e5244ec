//! The job-copy cache: the jobs this process wrote last, so the next event for one of them can
//! start from it instead of reading it again. A copy can be behind the store (another replica
//! wrote since); the compare-and-set then fails and the job is read afresh, so a copy only ever
//! saves a read (docs/consistency.md, "The copy cache").

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::domain::{Job, JobId, StageId, TaskId, TaskStatus, Timestamp};
use crate::ports::DispatchMark;

/// How many recently written jobs a process keeps.
const RECENT_JOBS: usize = 1024;

/// Jobs whose stage in flight has more tasks than this are wide: they are large, so only
/// [`RECENT_WIDE_JOBS`] of them are kept (1,024 small copies stay within tens of MiB).
const RECENT_MAX_TASKS: usize = 64;

/// How many wide jobs a process keeps. A wide job's read is megabytes, and its results arrive
/// in many batches on the replica that holds its result partition, each of which would
/// otherwise read it again.
const RECENT_WIDE_JOBS: usize = 4;

/// Outbox marks written by a dispatch: the stage, its tasks and the time written.
#[derive(Debug, Clone)]
pub struct Mark {
    pub stage_id: StageId,
    pub task_ids: Vec<TaskId>,
    pub at: Timestamp,
}

/// A copy of a job as this process wrote it.
#[derive(Debug, Clone)]
pub struct JobCopy {
    pub job: Arc<Job>,
    /// Its size as stored, or at most that, when known: a wide job's size is megabytes of
    /// serialisation to measure, so a write of a few results estimates it from this one.
    pub bytes: Option<usize>,
}

impl JobCopy {
    /// A copy whose size is not known.
    pub fn new(job: Arc<Job>) -> Self {
        Self { job, bytes: None }
    }
}

/// How many runs that ended this process remembers, so a deferred outbox mark for one of them
/// is dropped instead of written.
const RECENT_ENDED: usize = 4096;

/// The copies kept: small jobs and wide ones apart, each bounded; and the runs that ended.
#[derive(Default)]
struct Copies {
    small: HashMap<JobId, JobCopy>,
    wide: HashMap<JobId, JobCopy>,
    /// `(job id, run id)` of runs this process ended, oldest first, and the same as a set.
    ended: VecDeque<(JobId, String)>,
    ended_set: HashSet<(JobId, String)>,
}

/// The jobs this process wrote last.
#[derive(Default)]
pub struct JobCache {
    jobs: Mutex<Copies>,
}

/// Whether `job`'s stage in flight is wide.
fn is_wide(job: &Job) -> bool {
    job.current_stage
        .as_ref()
        .is_some_and(|s| s.tasks.len() > RECENT_MAX_TASKS)
}

impl JobCache {
    fn lock(&self) -> MutexGuard<'_, Copies> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the copy of job `id` out, if one is kept.
    pub fn take(&self, id: &JobId) -> Option<JobCopy> {
        let mut jobs = self.lock();
        jobs.small.remove(id).or_else(|| jobs.wide.remove(id))
    }

    /// Keeps `job`; when its kind is full, an arbitrary other copy of that kind makes room.
    pub fn put(&self, copy: JobCopy) {
        let mut guard = self.lock();
        let copies = &mut *guard;
        let wide = is_wide(&copy.job);
        let (jobs, other, limit) = match wide {
            false => (&mut copies.small, &mut copies.wide, RECENT_JOBS),
            true => (&mut copies.wide, &mut copies.small, RECENT_WIDE_JOBS),
        };
        let id = copy.job.id.clone();
        other.remove(&id);
        if jobs.len() >= limit
            && !jobs.contains_key(&id)
            && let Some(other) = jobs.keys().next().cloned()
        {
            jobs.remove(&other);
        }
        jobs.insert(id, copy);
    }

    /// Notes that this process ended `job`'s run (its copy is no longer kept).
    pub fn ended(&self, job: &Job) {
        let mut copies = self.lock();
        let run = (job.id.clone(), job.run_id.clone());
        if !copies.ended_set.insert(run.clone()) {
            return;
        }
        if copies.ended.len() >= RECENT_ENDED
            && let Some(oldest) = copies.ended.pop_front()
        {
            copies.ended_set.remove(&oldest);
        }
        copies.ended.push_back(run);
    }

    /// Whether the outbox `mark` is still worth writing: not when this process ended the run,
    /// nor when its copy shows every task the mark names answered (done, failed, or a later
    /// attempt). With no copy at hand (another replica's, or one being written now) it is.
    pub fn needs_mark(&self, mark: &DispatchMark) -> bool {
        let job = {
            let copies = self.lock();
            let run = (mark.job_id.clone(), mark.run_id.clone());
            if copies.ended_set.contains(&run) {
                return false;
            }
            let copy = copies
                .small
                .get(&mark.job_id)
                .or(copies.wide.get(&mark.job_id));
            match copy {
                // Looked at outside the lock: a wide stage is thousands of tasks.
                Some(copy) => copy.job.clone(),
                None => return true,
            }
        };
        if job.run_id != mark.run_id {
            return true;
        }
        let Some(stage) = job.current_stage.as_ref().filter(|s| s.id == mark.stage_id) else {
            // The stage ended since the dispatch (or the job is another's now): nothing pends.
            return !job.stages.iter().any(|s| s.id == mark.stage_id);
        };
        let named: HashSet<&TaskId> = mark.task_ids.iter().collect();
        stage
            .tasks
            .iter()
            .any(|t| t.status == TaskStatus::Pending && named.contains(&t.task_id))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        let copies = self.lock();
        copies.small.len() + copies.wide.len()
    }
}

/// `job` with the outbox marks a dispatch wrote to the store since it was written.
pub fn with_marks(mut job: Job, marks: &[Mark]) -> Job {
    for mark in marks {
        let Some(stage) = job.current_stage.as_mut().filter(|s| s.id == mark.stage_id) else {
            continue;
        };
        // A wide stage's mark names thousands of tasks: looked up, not searched.
        let named: HashSet<&TaskId> = mark.task_ids.iter().collect();
        for task in stage
            .tasks
            .iter_mut()
            .filter(|t| named.contains(&t.task_id))
        {
            task.dispatched = Some(mark.at);
        }
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::sample_job;

    #[test]
    fn keeps_small_jobs_and_makes_room_when_full() {
        let cache = JobCache::default();
        for n in 0..RECENT_JOBS + 5 {
            cache.put(JobCopy::new(Arc::new(sample_job(&format!("h{n}"), 2))));
        }
        assert_eq!(cache.len(), RECENT_JOBS);
        let last = sample_job(&format!("h{}", RECENT_JOBS + 4), 2);
        assert!(cache.take(&last.id).is_some(), "the newest copy is kept");
        assert!(cache.take(&last.id).is_none(), "take removes it");
    }

    #[test]
    fn a_few_wide_jobs_are_kept_apart_from_the_small_ones() {
        let cache = JobCache::default();
        for n in 0..RECENT_WIDE_JOBS + 3 {
            cache.put(JobCopy::new(Arc::new(sample_job(
                &format!("w{n}"),
                RECENT_MAX_TASKS + 1,
            ))));
        }
        cache.put(JobCopy::new(Arc::new(sample_job("small", 2))));
        assert_eq!(cache.len(), RECENT_WIDE_JOBS + 1);
        let newest = sample_job(&format!("w{}", RECENT_WIDE_JOBS + 2), 1);
        assert!(
            cache.take(&newest.id).is_some(),
            "the newest wide copy is kept"
        );
        assert!(cache.take(&sample_job("small", 2).id).is_some());
    }

    #[test]
    fn marks_apply_to_the_named_tasks_of_the_current_stage_only() {
        let job = sample_job("marks", 3);
        let stage = job.current_stage.as_ref().expect("a stage in flight");
        let first = stage.tasks[0].task_id.clone();
        let at = Timestamp::from(chrono::Utc::now());
        let marks = [
            Mark {
                stage_id: stage.id.clone(),
                task_ids: vec![first.clone()],
                at,
            },
            Mark {
                stage_id: StageId::for_index(7),
                task_ids: stage.tasks.iter().map(|t| t.task_id.clone()).collect(),
                at,
            },
        ];
        let marked = with_marks(job.clone(), &marks);
        let tasks = &marked.current_stage.as_ref().expect("stage").tasks;
        assert_eq!(tasks[0].dispatched, Some(at));
        assert!(tasks[1..].iter().all(|t| t.dispatched.is_none()));
    }
}
