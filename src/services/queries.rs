//! The read side of the API (README.md, "REST API" and "Listing queries"): a job's view, an
//! archived record, the listings of active and ended jobs, the count of active jobs and the
//! database ping behind readiness. Nothing here writes.

use futures::{Stream, StreamExt, TryStreamExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{Job, JobId, JobView};
use crate::store::Store;
pub use crate::store::{HistoryRecord, ListFilter, Listing, PageCursor};

use super::Failure;

/// How many undecodable documents one page may skip before it ends early.
const SKIPPED_SLACK: u32 = 64;

/// An archived job, with the runs of the same file that it replaced.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HistoryView {
    #[serde(flatten)]
    pub job: JobView,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_runs: Vec<JobView>,
}

impl From<&HistoryRecord> for HistoryView {
    fn from(record: &HistoryRecord) -> Self {
        Self {
            job: JobView::from(&record.job),
            previous_runs: record.previous_runs.iter().map(JobView::from).collect(),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Job ids, newest `created` first.
    pub ids: Vec<String>,
    /// The encoded cursor of the last id when more follow: the next page's `after`.
    pub next: Option<String>,
}

/// Reads jobs, history and listings. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Queries {
    store: Store,
}

impl Queries {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The active job `id`, if any.
    pub async fn job(&self, id: &JobId) -> Result<Option<Job>, Failure> {
        Ok(self.store.load_job(id).await?)
    }

    /// The run and version of the active job `id` (a cheap read: has it changed?).
    pub async fn job_stamp(&self, id: &JobId) -> Result<Option<(String, i64)>, Failure> {
        Ok(self.store.job_stamp(id).await?)
    }

    /// The active job `id` as clients see it.
    pub async fn job_view(&self, id: &JobId) -> Result<Option<JobView>, Failure> {
        Ok(self.job(id).await?.as_ref().map(JobView::from))
    }

    /// The archived record of job `id`, with the earlier runs it replaced.
    pub async fn history(&self, id: &JobId) -> Result<Option<HistoryRecord>, Failure> {
        Ok(self.store.load_history(id).await?)
    }

    /// The archived record of job `id` as clients see it.
    pub async fn history_view(&self, id: &JobId) -> Result<Option<HistoryView>, Failure> {
        Ok(self.history(id).await?.as_ref().map(HistoryView::from))
    }

    /// Every id matching `filter`, newest first, streamed from the database cursor (the
    /// seed's unpaged listing); `filter.limit` still bounds it when set.
    pub async fn ids(
        &self,
        listing: Listing,
        filter: &ListFilter,
    ) -> Result<impl Stream<Item = Result<String, Failure>> + Send + 'static, Failure> {
        let listed = self.store.list(listing, filter).await?;
        Ok(listed.map(|item| item.map(|listed| listed.id).map_err(Failure::from)))
    }

    /// At most `limit` ids matching `filter` after `filter.after`, and the cursor of the next
    /// page when more follow.
    pub async fn page(
        &self,
        listing: Listing,
        filter: ListFilter,
        limit: u32,
    ) -> Result<Page, Failure> {
        // One more than asked tells whether another page follows. The store is asked for a few
        // more still: a document that does not decode is skipped, and must not end the paging.
        let filter = ListFilter {
            limit: Some(limit + 1 + SKIPPED_SLACK),
            ..filter
        };
        let mut listed: Vec<_> = self
            .store
            .list(listing, &filter)
            .await?
            .take(limit as usize + 1)
            .try_collect()
            .await?;
        let more = listed.len() > limit as usize;
        listed.truncate(limit as usize);
        let next = listed
            .last()
            .filter(|_| more)
            .map(|last| last.cursor().encode());
        Ok(Page {
            ids: listed.into_iter().map(|listed| listed.id).collect(),
            next,
        })
    }

    /// How many jobs are active (pending, running, paused or held).
    pub async fn count_active(&self) -> Result<u64, Failure> {
        Ok(self.store.count_active().await?)
    }

    /// Whether MongoDB answers.
    pub async fn ping(&self) -> Result<(), Failure> {
        Ok(self.store.ping().await?)
    }
}
