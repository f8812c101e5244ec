//! Coalescing: events for the same job that arrive while one is being written wait, and the
//! caller writing (the leader) applies them all in arrival order, in one compare-and-set, and
//! hands each waiter its own outcome (docs/consistency.md, "Coalescing").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::error::{CoordinatorError, Handled};
use crate::domain::size::json_size;
use crate::domain::{Event, JobId};

/// Most events of one job applied in one write.
pub const BATCH_MAX_EVENTS: usize = 256;

/// Most bytes of results (outputs, logs and errors, as JSON) applied in one write; the events
/// past it wait for the next write, so a batch's size is known before it is applied.
pub const BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Where the outcome of a coalesced event goes.
pub type Reply = oneshot::Sender<Result<Handled, CoordinatorError>>;

/// An event coalesced into another caller's batch, and where its outcome goes.
pub struct Waiter {
    pub event: Event,
    pub reply: Reply,
}

/// The batch in progress for one job: its leader's token and the events waiting for it.
struct Batch {
    leader: u64,
    waiting: Vec<Waiter>,
}

/// Per job with a batch in progress, the events waiting for its leader.
#[derive(Default)]
pub struct Batches {
    jobs: Mutex<HashMap<JobId, Batch>>,
    tokens: AtomicU64,
}

/// What a caller became by joining the batches.
pub enum Joined<'a> {
    /// No batch was in progress: the caller writes, and takes the waiters as they come.
    Leader(Leader<'a>),
    /// A batch was in progress: the event waits for its outcome here. An error on receiving
    /// means the leader stopped before the event's turn; the caller handles it again.
    Follower(oneshot::Receiver<Result<Handled, CoordinatorError>>),
}

impl Batches {
    /// The map, even if a thread panicked holding it: no section under the lock leaves it
    /// half-changed.
    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Batch>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the batch of job `id` with `event`: as its leader if none is in progress, else as
    /// a waiter.
    pub fn join<'a>(&'a self, id: &'a JobId, event: &Event) -> Joined<'a> {
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let mut jobs = self.lock();
        if let Some(batch) = jobs.get_mut(id) {
            let (reply, receiver) = oneshot::channel();
            batch.waiting.push(Waiter {
                event: event.clone(),
                reply,
            });
            return Joined::Follower(receiver);
        }
        jobs.insert(
            id.clone(),
            Batch {
                leader: token,
                waiting: Vec::new(),
            },
        );
        Joined::Leader(Leader {
            batches: self,
            id,
            token,
        })
    }

    /// How many events wait for job `id`'s leader.
    #[cfg(test)]
    pub fn waiting(&self, id: &JobId) -> usize {
        self.lock().get(id).map_or(0, |b| b.waiting.len())
    }
}

/// The leader of one job's batch. Dropping it (when the leader stops, even if its future is
/// dropped) removes the job's entry, so waiters are never stranded: their replies drop and
/// they handle their events on their own. Only this leader's entry is removed, never a later
/// leader's.
pub struct Leader<'a> {
    batches: &'a Batches,
    id: &'a JobId,
    token: u64,
}

impl Leader<'_> {
    /// The next events that waited, up to [`BATCH_MAX_EVENTS`] and [`BATCH_MAX_BYTES`]; `None`
    /// when none wait, which also ends the batch (a later event finds no leader).
    pub fn next_batch(&self) -> Option<Vec<Waiter>> {
        let mut jobs = self.batches.lock();
        match jobs.get_mut(self.id) {
            Some(batch) if batch.leader == self.token && !batch.waiting.is_empty() => {
                Some(take_batch(&mut batch.waiting))
            }
            Some(batch) if batch.leader == self.token => {
                jobs.remove(self.id);
                None
            }
            _ => None,
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut jobs = self.batches.lock();
        if jobs.get(self.id).is_some_and(|b| b.leader == self.token) {
            jobs.remove(self.id);
        }
    }
}

/// Takes the first waiting events, up to [`BATCH_MAX_EVENTS`] and [`BATCH_MAX_BYTES`] (at
/// least one, whatever its size: a single result is bounded by the message size limit).
fn take_batch(queue: &mut Vec<Waiter>) -> Vec<Waiter> {
    let mut bytes = 0usize;
    let mut taken = 0;
    for waiter in queue.iter() {
        let size = event_bytes(&waiter.event);
        if taken > 0 && (taken >= BATCH_MAX_EVENTS || bytes + size > BATCH_MAX_BYTES) {
            break;
        }
        bytes += size;
        taken += 1;
    }
    queue.drain(..taken).collect()
}

/// About how many bytes an event brings into the job.
pub fn event_bytes(event: &Event) -> usize {
    match event {
        Event::Result(result) | Event::Skip(result) => {
            let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
            result.outputs.iter().map(json_size).sum::<usize>()
                + text(&result.log)
                + text(&result.error)
                + 64
        }
        Event::Fail { reason } => reason.len() + 64,
        Event::Start | Event::Abort | Event::Pause | Event::Resume | Event::Timeout { .. } => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TaskId, TaskResult};

    fn id() -> JobId {
        JobId::derive("m", "h")
    }

    fn result(log_bytes: usize) -> Event {
        Event::Result(TaskResult {
            task_id: TaskId::derive("r", &crate::domain::StageId::for_index(0), 0, 1),
            run_id: None,
            outputs: Vec::new(),
            log: Some("x".repeat(log_bytes)),
            error: None,
        })
    }

    #[test]
    fn the_first_caller_leads_and_the_others_wait() {
        let batches = Batches::default();
        let id = id();
        let leader = match batches.join(&id, &Event::Start) {
            Joined::Leader(leader) => leader,
            Joined::Follower(_) => panic!("the first caller must lead"),
        };
        let _followers: Vec<_> = (0..3)
            .map(|_| match batches.join(&id, &Event::Abort) {
                Joined::Follower(receiver) => receiver,
                Joined::Leader(_) => panic!("a batch is in progress"),
            })
            .collect();
        assert_eq!(batches.waiting(&id), 3);
        let batch = leader.next_batch().expect("three waited");
        assert_eq!(batch.len(), 3);
        assert!(leader.next_batch().is_none(), "none left: the batch ends");
        assert!(matches!(
            batches.join(&id, &Event::Start),
            Joined::Leader(_)
        ));
    }

    #[tokio::test]
    async fn a_leader_that_stops_releases_its_waiters() {
        let batches = Batches::default();
        let id = id();
        let leader = batches.join(&id, &Event::Start);
        let Joined::Follower(receiver) = batches.join(&id, &Event::Abort) else {
            panic!("a batch is in progress");
        };
        drop(leader);
        assert!(
            receiver.await.is_err(),
            "the waiter learns it must go alone"
        );
        assert!(matches!(
            batches.join(&id, &Event::Start),
            Joined::Leader(_)
        ));
    }

    #[test]
    fn an_old_leader_never_ends_a_later_leaders_batch() {
        let batches = Batches::default();
        let id = id();
        let Joined::Leader(first) = batches.join(&id, &Event::Start) else {
            panic!("first leads");
        };
        assert!(first.next_batch().is_none(), "ends the first batch");
        let Joined::Leader(second) = batches.join(&id, &Event::Start) else {
            panic!("second leads");
        };
        let _waiter = batches.join(&id, &Event::Abort);
        drop(first);
        assert_eq!(batches.waiting(&id), 1, "the second batch is intact");
        assert_eq!(second.next_batch().map(|b| b.len()), Some(1));
    }

    #[test]
    fn a_batch_stops_at_its_event_and_byte_limits_but_takes_at_least_one() {
        let reply = || oneshot::channel().0;
        let mut queue: Vec<Waiter> = (0..BATCH_MAX_EVENTS + 10)
            .map(|_| Waiter {
                event: result(10),
                reply: reply(),
            })
            .collect();
        assert_eq!(take_batch(&mut queue).len(), BATCH_MAX_EVENTS);
        assert_eq!(queue.len(), 10);

        let big = BATCH_MAX_BYTES / 2;
        let mut queue: Vec<Waiter> = (0..3)
            .map(|_| Waiter {
                event: result(big),
                reply: reply(),
            })
            .collect();
        assert_eq!(
            take_batch(&mut queue).len(),
            1,
            "two would pass the byte limit"
        );
        let mut huge = vec![Waiter {
            event: result(BATCH_MAX_BYTES * 2),
            reply: reply(),
        }];
        assert_eq!(take_batch(&mut huge).len(), 1, "one always goes");
    }
}
