//! Group commit of compare-and-sets: the writes of different jobs that are ready at the same
//! moment go to the store in one round trip (docs/consistency.md, "Group commit").
//!
//! A background committer takes the writes handed in, sends them with
//! [`JobStore::compare_and_set_many`] and hands each writer its own outcome. It batches
//! naturally: while [`COMMIT_IN_FLIGHT`] commands are in flight, new writes queue; when one
//! returns, everything queued goes as the next command (up to [`COMMIT_MAX_WRITES`] and
//! [`COMMIT_MAX_BYTES`]). No write waits for a timer, so a job alone pays a hand-over, not a
//! delay, and under load many jobs share one round trip. Each write is still its job's own compare-and-set: the store
//! judges every statement on its own, and a writer that lost reads its job again as before
//! (`write.rs`). A job larger than [`COMMIT_ALONE_BYTES`] is written on its own, beside the
//! committer, so its megabytes do not hold up the small writes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::Job;
use crate::meter;
use crate::ports::{JobStore, StoreError};

/// Most compare-and-sets sent in one command.
pub const COMMIT_MAX_WRITES: usize = 128;

/// Most bytes of jobs (as stored) whose compare-and-sets go in one command. A job's update is
/// at most about its size, so the command stays well under MongoDB's 16 MiB.
pub const COMMIT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Commands in flight at a time. The second keeps the store busy while the first one's reply
/// comes back and the next batch is built; more would only split the batches.
pub const COMMIT_IN_FLIGHT: usize = 2;

/// A job taking more than this is written alone, without the committer.
pub const COMMIT_ALONE_BYTES: usize = 1024 * 1024;

/// Most writes waiting; past it, handing one in waits (the committer is behind).
const QUEUE: usize = 4096;

/// A write's outcome: the job written when it won, `None` when it lost.
type Outcome = Result<Option<Job>, StoreError>;

/// One compare-and-set handed to the committer, and where its outcome goes.
struct Request {
    before: Job,
    after: Job,
    /// `after`'s size as stored.
    bytes: usize,
    reply: oneshot::Sender<Outcome>,
}

/// Hands compare-and-sets to the background committer. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    store: Arc<dyn JobStore>,
    requests: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committer on the current tokio runtime; it ends when every clone is dropped.
    pub fn start(store: Arc<dyn JobStore>) -> Self {
        let (requests, incoming) = mpsc::channel(QUEUE);
        tokio::spawn(commit(store.clone(), incoming));
        Self { store, requests }
    }

    /// Turns the stored `before` into `after` by compare-and-set, in one command with the
    /// compare-and-sets of other jobs handed in meanwhile. Returns `after` when it won and
    /// `None` when it lost; `bytes` is `after`'s size as stored.
    pub async fn compare_and_set(&self, before: Job, after: Job, bytes: usize) -> Outcome {
        if bytes > COMMIT_ALONE_BYTES {
            return alone(&*self.store, before, after).await;
        }
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            before,
            after,
            bytes,
            reply,
        };
        if let Err(mpsc::error::SendError(request)) = self.requests.send(request).await {
            // The committer is gone (the runtime is shutting down): write alone.
            return alone(&*self.store, request.before, request.after).await;
        }
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the compare-and-set committer stopped; the write may or may not be done".into(),
            ))
        })
    }
}

/// A compare-and-set on its own.
async fn alone(store: &dyn JobStore, before: Job, after: Job) -> Outcome {
    let won = store.compare_and_set(&before, &after).await?;
    Ok(won.then_some(after))
}

/// The committer: sends what is queued as one command, at most [`COMMIT_IN_FLIGHT`] commands at a
/// time, until every sender is gone.
async fn commit(store: Arc<dyn JobStore>, mut incoming: mpsc::Receiver<Request>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(COMMIT_IN_FLIGHT));
    let mut held = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(request) => request,
            None => match incoming.recv().await {
                Some(request) => request,
                None => return,
            },
        };
        let (batch, next) = gather(first, &mut incoming);
        held = next;
        let store = store.clone();
        tokio::spawn(async move {
            send(&*store, batch).await;
            drop(slot);
        });
    }
}

/// `first` and the requests queued behind it, up to [`COMMIT_MAX_WRITES`] and
/// [`COMMIT_MAX_BYTES`]; a request that does not fit is returned, to lead the next batch.
fn gather(
    first: Request,
    incoming: &mut mpsc::Receiver<Request>,
) -> (Vec<Request>, Option<Request>) {
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while batch.len() < COMMIT_MAX_WRITES {
        let Ok(request) = incoming.try_recv() else {
            break;
        };
        if bytes + request.bytes > COMMIT_MAX_BYTES {
            return (batch, Some(request));
        }
        bytes += request.bytes;
        batch.push(request);
    }
    (batch, None)
}

/// Sends `batch` as one command and hands each request its outcome; a failure of the whole
/// command reaches every request.
async fn send(store: &dyn JobStore, batch: Vec<Request>) {
    meter::commit_size(batch.len());
    let pairs: Vec<(&Job, &Job)> = batch.iter().map(|r| (&r.before, &r.after)).collect();
    let outcomes = match store.compare_and_set_many(&pairs).await {
        Ok(outcomes) if outcomes.len() == batch.len() => outcomes,
        Ok(outcomes) => {
            let error = StoreError::Malformed(format!(
                "{} outcomes for {} compare-and-sets",
                outcomes.len(),
                batch.len()
            ));
            vec![Err(error); batch.len()]
        }
        Err(error) => vec![Err(error); batch.len()],
    };
    drop(pairs);
    for (request, outcome) in batch.into_iter().zip(outcomes) {
        let Request { after, reply, .. } = request;
        let _ = reply.send(outcome.map(|won| won.then_some(after)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::sample_job;

    fn request(bytes: usize) -> Request {
        let job = sample_job("commit", 1);
        Request {
            before: job.clone(),
            after: job,
            bytes,
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_its_count_and_bytes() {
        let (sender, mut incoming) = mpsc::channel(QUEUE);
        for _ in 0..300 {
            sender.send(request(100)).await.expect("open");
        }
        let (batch, held) = gather(request(100), &mut incoming);
        assert_eq!((batch.len(), held.is_none()), (COMMIT_MAX_WRITES, true));
        let mut sizes = Vec::new();
        let mut next = incoming.try_recv().ok();
        while let Some(first) = next {
            let (batch, _) = gather(first, &mut incoming);
            sizes.push(batch.len());
            next = incoming.try_recv().ok();
        }
        assert_eq!(sizes, [128, 45], "the rest, as queued");
        let big = COMMIT_MAX_BYTES / 3 + 1;
        for _ in 0..3 {
            sender.send(request(big)).await.expect("open");
        }
        let (batch, held) = gather(request(big), &mut incoming);
        assert_eq!(batch.len(), 2, "two fit under the bytes");
        assert!(held.is_some(), "the third leads the next batch");
    }
}
