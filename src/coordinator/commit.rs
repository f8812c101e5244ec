//! Group commit: the compare-and-sets, and the moves to history, of different jobs that are
//! ready at the same moment go to the store in one round trip (docs/consistency.md, "Group
//! commit").
//!
//! A background task per kind takes what is handed in, sends it with
//! [`JobStore::compare_and_set_many`] or [`JobStore::archive_many`] and hands each caller its
//! own outcome. It batches naturally: while [`COMMIT_IN_FLIGHT`] commands are in flight, new
//! requests queue; when one returns, everything queued goes as the next command (up to
//! [`COMMIT_MAX_WRITES`] and [`COMMIT_MAX_BYTES`]). No request waits for a timer, so a job
//! alone pays a hand-over, not a delay, and under load many jobs share one round trip. Each
//! write is still its job's own compare-and-set: the store judges every statement on its own,
//! and a writer that lost reads its job again as before (`write.rs`). A job larger than
//! [`COMMIT_ALONE_BYTES`] is written and archived on its own, beside the committer, so its
//! megabytes do not hold up the small jobs.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::domain::Job;
use crate::meter;
use crate::ports::{JobStore, StoreError};

/// Most requests sent in one command.
pub const COMMIT_MAX_WRITES: usize = 128;

/// Most bytes of jobs (as stored) whose requests go in one command. A job's update is at most
/// about its size, so a command of compare-and-sets stays well under MongoDB's 16 MiB.
pub const COMMIT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Commands in flight at a time, per kind. The second keeps the store busy while the first
/// one's reply comes back and the next batch is built; more would only split the batches.
pub const COMMIT_IN_FLIGHT: usize = 2;

/// A job taking more than this is written and archived alone, without the committer.
pub const COMMIT_ALONE_BYTES: usize = 1024 * 1024;

/// Most requests waiting; past it, handing one in waits (the committer is behind).
const QUEUE: usize = 4096;

/// A write's outcome: the job written when it won, `None` when it lost.
type Written = Result<Option<Job>, StoreError>;

/// A move to history's outcome.
type Archived = Result<(), StoreError>;

/// Hands compare-and-sets and moves to history to the background committers. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    store: Arc<dyn JobStore>,
    writes: Group<(Arc<Job>, Job), Written>,
    archives: Group<Arc<Job>, Archived>,
}

impl Committer {
    /// Starts the committers on the current tokio runtime; they end when every clone is
    /// dropped.
    pub fn start(store: Arc<dyn JobStore>) -> Self {
        let writer = store.clone();
        let writes = Group::start(move |batch| write_many(writer.clone(), batch));
        let archiver = store.clone();
        let archives = Group::start(move |batch| archive_many(archiver.clone(), batch));
        Self {
            store,
            writes,
            archives,
        }
    }

    /// Turns the stored `before` into `after` by compare-and-set, in one command with the
    /// compare-and-sets of other jobs handed in meanwhile. Returns `after` when it won and
    /// `None` when it lost; `bytes` is `after`'s size as stored.
    pub async fn compare_and_set(&self, before: Arc<Job>, after: Job, bytes: usize) -> Written {
        if bytes > COMMIT_ALONE_BYTES {
            return write_alone(&*self.store, before, after).await;
        }
        match self.writes.submit((before, after), bytes).await {
            Submitted::Done(outcome) => outcome,
            // The committer is gone (the runtime is shutting down): write alone.
            Submitted::Gone((before, after)) => write_alone(&*self.store, before, after).await,
            Submitted::Lost => Err(stopped()),
        }
    }

    /// Moves the ended `job` to history, in one call with the moves of other jobs handed in
    /// meanwhile; `bytes` is its size as stored.
    pub async fn archive(&self, job: Arc<Job>, bytes: usize) -> Archived {
        if bytes > COMMIT_ALONE_BYTES {
            return self.store.archive(&job).await;
        }
        match self.archives.submit(job, bytes).await {
            Submitted::Done(outcome) => outcome,
            Submitted::Gone(job) => self.store.archive(&job).await,
            Submitted::Lost => Err(stopped()),
        }
    }
}

/// A committer that stopped while it held a request: what became of it is not known.
fn stopped() -> StoreError {
    StoreError::Unavailable("the committer stopped; the write may or may not be done".into())
}

/// A compare-and-set on its own.
async fn write_alone(store: &dyn JobStore, before: Arc<Job>, after: Job) -> Written {
    let won = store.compare_and_set(&before, &after).await?;
    Ok(won.then_some(after))
}

/// Sends a batch of compare-and-sets as one command: one outcome per write, in order.
async fn write_many(store: Arc<dyn JobStore>, batch: Vec<(Arc<Job>, Job)>) -> Vec<Written> {
    meter::commit_size(batch.len());
    let pairs: Vec<(&Job, &Job)> = batch.iter().map(|(b, a)| (&**b, a)).collect();
    let outcomes = store.compare_and_set_many(&pairs).await;
    drop(pairs);
    let outcomes = one_each(outcomes, batch.len());
    batch
        .into_iter()
        .zip(outcomes)
        .map(|((_, after), won)| won.map(|won| won.then_some(after)))
        .collect()
}

/// Sends a batch of moves to history as one call: one outcome per job, in order.
async fn archive_many(store: Arc<dyn JobStore>, batch: Vec<Arc<Job>>) -> Vec<Archived> {
    meter::archive_commit_size(batch.len());
    let jobs: Vec<&Job> = batch.iter().map(|job| &**job).collect();
    one_each(store.archive_many(&jobs).await, batch.len())
}

/// One outcome per request of a batch of `count`: a failure of the whole call reaches every
/// request.
fn one_each<T: Clone>(
    outcomes: Result<Vec<Result<T, StoreError>>, StoreError>,
    count: usize,
) -> Vec<Result<T, StoreError>> {
    match outcomes {
        Ok(outcomes) if outcomes.len() == count => outcomes,
        Ok(outcomes) => {
            let error = format!("{} outcomes for {count} requests", outcomes.len());
            vec![Err(StoreError::Malformed(error)); count]
        }
        Err(error) => vec![Err(error); count],
    }
}

/// What became of a request handed to a [`Group`].
enum Submitted<T, O> {
    Done(O),
    /// The group's task is gone; the request comes back.
    Gone(T),
    /// The group's task stopped while it held the request.
    Lost,
}

/// A request waiting in a [`Group`], its size, and where its outcome goes.
struct Entry<T, O> {
    item: T,
    bytes: usize,
    reply: oneshot::Sender<O>,
}

/// Requests of one kind, batched naturally by a background task that sends each batch with
/// the function it was started with. Cheap to clone.
struct Group<T, O> {
    requests: mpsc::Sender<Entry<T, O>>,
}

impl<T, O> Clone for Group<T, O> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<T: Send + 'static, O: Send + 'static> Group<T, O> {
    /// Starts the task; `send` turns a batch into one outcome per request, in order.
    fn start<F, Fut>(send: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (requests, incoming) = mpsc::channel(QUEUE);
        tokio::spawn(run(send, incoming));
        Self { requests }
    }

    /// Hands in `item` of `bytes` and waits for its outcome.
    async fn submit(&self, item: T, bytes: usize) -> Submitted<T, O> {
        let (reply, outcome) = oneshot::channel();
        let entry = Entry { item, bytes, reply };
        if let Err(mpsc::error::SendError(entry)) = self.requests.send(entry).await {
            return Submitted::Gone(entry.item);
        }
        match outcome.await {
            Ok(outcome) => Submitted::Done(outcome),
            Err(_) => Submitted::Lost,
        }
    }
}

/// The task: sends what is queued as one batch, at most [`COMMIT_IN_FLIGHT`] at a time, until
/// every sender is gone.
async fn run<T, O, F, Fut>(send: F, mut incoming: mpsc::Receiver<Entry<T, O>>)
where
    T: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<O>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(COMMIT_IN_FLIGHT));
    let mut held = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(entry) => entry,
            None => match incoming.recv().await {
                Some(entry) => entry,
                None => return,
            },
        };
        let (batch, next) = gather(first, &mut incoming);
        held = next;
        let (items, replies): (Vec<T>, Vec<_>) =
            batch.into_iter().map(|e| (e.item, e.reply)).unzip();
        let sent = send(items);
        tokio::spawn(async move {
            for (reply, outcome) in replies.into_iter().zip(sent.await) {
                let _ = reply.send(outcome);
            }
            drop(slot);
        });
    }
}

/// A batch, and the request that did not fit in it, if any.
type Gathered<T, O> = (Vec<Entry<T, O>>, Option<Entry<T, O>>);

/// `first` and the requests queued behind it, up to [`COMMIT_MAX_WRITES`] and
/// [`COMMIT_MAX_BYTES`]; a request that does not fit is returned, to lead the next batch.
fn gather<T, O>(first: Entry<T, O>, incoming: &mut mpsc::Receiver<Entry<T, O>>) -> Gathered<T, O> {
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while batch.len() < COMMIT_MAX_WRITES {
        let Ok(entry) = incoming.try_recv() else {
            break;
        };
        if bytes + entry.bytes > COMMIT_MAX_BYTES {
            return (batch, Some(entry));
        }
        bytes += entry.bytes;
        batch.push(entry);
    }
    (batch, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize) -> Entry<(), ()> {
        Entry {
            item: (),
            bytes,
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_its_count_and_bytes() {
        let (sender, mut incoming) = mpsc::channel(QUEUE);
        for _ in 0..300 {
            sender.send(entry(100)).await.expect("open");
        }
        let (batch, held) = gather(entry(100), &mut incoming);
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
            sender.send(entry(big)).await.expect("open");
        }
        let (batch, held) = gather(entry(big), &mut incoming);
        assert_eq!(batch.len(), 2, "two fit under the bytes");
        assert!(held.is_some(), "the third leads the next batch");
    }
}
