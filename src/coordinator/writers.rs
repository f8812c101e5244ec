//! What follows a write, many at a time: outbox marks and job events, handed to two background
//! writers (docs/consistency.md, "The outbox").
//!
//! Marks of many jobs go to the store in one round trip (a group commit). A dispatch made by a
//! batch hands its mark in to be written [`MARK_DELAY`] later, and only if its tasks have not
//! answered by then (most have); the sweep's re-publishes wait for the write that carries
//! their mark. A failed mark is logged, not returned: it only
//! tells the sweep not to publish a task again, so a lost one costs a harmless re-publish after
//! the dispatch grace. Job events are best effort: they go to the broker in order, many per
//! confirm, and nobody waits for them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use crate::meter;
use crate::ports::{Announced, Broker, DispatchMark, JobStore};

/// Most items written in one round trip.
const BATCH: usize = 256;

/// Most items waiting; past it, handing one in waits (the writer is behind).
const QUEUE: usize = 8192;

/// An item for a writer, or a request to say when everything before it was written.
enum Item<T> {
    Write(T),
    Flush(oneshot::Sender<()>),
}

/// How long the outbox mark of a dispatch made by a batch waits before it is written. The mark
/// only tells the sweep not to publish a pending task again once the dispatch grace has passed
/// (30 s by default), so a task that answers sooner needs none, and most do: its mark is
/// dropped unwritten (docs/consistency.md, "The outbox").
pub const MARK_DELAY: Duration = Duration::from_millis(500);

/// Whether a deferred mark is still to be written when its time comes: `false` once every task
/// it names is known to have answered (or the job to have ended).
pub type StillNeeded = Arc<dyn Fn(&DispatchMark) -> bool + Send + Sync>;

/// The two background writers. Cheap to clone.
#[derive(Clone)]
pub struct Writers {
    marks: mpsc::Sender<Item<DispatchMark>>,
    /// Marks waiting for [`MARK_DELAY`], in the order handed in.
    later: mpsc::Sender<Item<(Instant, DispatchMark)>>,
    events: mpsc::Sender<Item<Announced>>,
}

impl Writers {
    /// Starts the writers on the current tokio runtime; they end when every clone is dropped.
    pub fn start(store: Arc<dyn JobStore>, broker: Arc<dyn Broker>, needed: StillNeeded) -> Self {
        let (marks, marks_in) = mpsc::channel(QUEUE);
        let (later, later_in) = mpsc::channel(QUEUE);
        let (events, events_in) = mpsc::channel(QUEUE);
        tokio::spawn(defer(later_in, marks.clone(), needed));
        tokio::spawn(drain(marks_in, move |batch: Vec<DispatchMark>| {
            let store = store.clone();
            async move {
                let written = meter::timed("mark", store.mark_dispatched(&batch)).await;
                if let Err(error) = written {
                    warn!(%error, marks = batch.len(), "outbox marks not written; the sweep will publish those tasks again");
                }
            }
        }));
        tokio::spawn(drain(events_in, move |batch: Vec<Announced>| {
            let broker = broker.clone();
            async move {
                let published = meter::timed("notify", broker.notify(&batch)).await;
                if let Err(error) = published {
                    warn!(%error, events = batch.len(), "job events not published");
                }
            }
        }));
        Self {
            marks,
            later,
            events,
        }
    }

    /// Hands in an outbox mark to write after [`MARK_DELAY`], unless its tasks answered by then.
    /// Nothing waits for it: the job's next write does not meet it on the store.
    pub async fn mark_later(&self, mark: DispatchMark) {
        let due = Instant::now() + MARK_DELAY;
        if self.later.send(Item::Write((due, mark))).await.is_err() {
            warn!("the outbox mark writer has stopped; the sweep will publish the task again");
        }
    }

    /// Writes an outbox mark together with the marks other jobs hand in meanwhile, and returns
    /// once that write is done (or failed: a lost mark costs a re-publish, so it is logged, not
    /// returned). Waiting keeps the mark ahead of the job's next write: a mark and a
    /// compare-and-set of the same document at once made a job alone slower on the store.
    pub async fn mark(&self, mark: DispatchMark) {
        let (done, written) = oneshot::channel();
        let sent = self.marks.send(Item::Write(mark)).await.is_ok()
            && self.marks.send(Item::Flush(done)).await.is_ok();
        if !sent {
            warn!("the outbox mark writer has stopped; the sweep will publish the task again");
            return;
        }
        let _ = written.await;
    }

    /// Hands in a job event.
    pub async fn announce(&self, announced: Announced) {
        if self.events.send(Item::Write(announced)).await.is_err() {
            warn!("the job event publisher has stopped; event not published");
        }
    }

    /// Returns once every mark and event handed in before was written (or failed); deferred
    /// marks still needed are written at once.
    pub async fn flush(&self) {
        let (marks, marked) = oneshot::channel();
        let (events, announced) = oneshot::channel();
        if self.later.send(Item::Flush(marks)).await.is_ok() {
            let _ = marked.await;
        }
        if self.events.send(Item::Flush(events)).await.is_ok() {
            let _ = announced.await;
        }
    }
}

/// Writes what comes in, up to [`BATCH`] items at a time in arrival order, until every sender
/// is gone; answers a flush once what came before it was written.
async fn drain<T, F, Fut>(mut incoming: mpsc::Receiver<Item<T>>, write: F)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while let Some(first) = incoming.recv().await {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Write(value) => batch.push(value),
                Item::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = incoming.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            write(batch).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Holds each mark until its time, then hands it to the mark writer if it is still needed. A
/// flush hands on every mark held (still needed) at once, then waits for the mark writer.
async fn defer(
    mut incoming: mpsc::Receiver<Item<(Instant, DispatchMark)>>,
    marks: mpsc::Sender<Item<DispatchMark>>,
    needed: StillNeeded,
) {
    let mut held: VecDeque<(Instant, DispatchMark)> = VecDeque::new();
    let hand_on = |mark: DispatchMark| {
        let (marks, keep) = (marks.clone(), needed(&mark));
        async move {
            if keep {
                let _ = marks.send(Item::Write(mark)).await;
            } else {
                meter::mark_skipped();
            }
        }
    };
    loop {
        let due = held.front().map(|(due, _)| *due);
        let sleep = tokio::time::sleep_until(due.unwrap_or_else(Instant::now));
        tokio::select! {
            item = incoming.recv() => match item {
                Some(Item::Write(mark)) => held.push_back(mark),
                Some(Item::Flush(done)) => {
                    while let Some((_, mark)) = held.pop_front() {
                        hand_on(mark).await;
                    }
                    if marks.send(Item::Flush(done)).await.is_err() {
                        warn!("the outbox mark writer has stopped");
                    }
                }
                None => break,
            },
            _ = sleep, if due.is_some() => {
                let now = Instant::now();
                while held.front().is_some_and(|(due, _)| *due <= now) {
                    if let Some((_, mark)) = held.pop_front() {
                        hand_on(mark).await;
                    }
                }
            }
        }
    }
    // Every sender is gone (shutdown): what is held is written, if still needed.
    for (_, mark) in held {
        hand_on(mark).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn items_are_written_in_order_in_batches_and_a_flush_waits_for_them() {
        let (sender, incoming) = mpsc::channel(QUEUE);
        let written: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let sink = written.clone();
        for n in 0..600 {
            sender.send(Item::Write(n)).await.expect("open");
        }
        let (flushed, done) = oneshot::channel();
        sender.send(Item::Flush(flushed)).await.expect("open");
        tokio::spawn(drain(incoming, move |batch: Vec<u32>| {
            let sink = sink.clone();
            async move { sink.lock().expect("sink").push(batch) }
        }));
        done.await.expect("flushed");
        let batches = written.lock().expect("sink").clone();
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [256, 256, 88]
        );
        let all: Vec<u32> = batches.concat();
        assert_eq!(all, (0..600).collect::<Vec<_>>(), "in arrival order");
    }
}
