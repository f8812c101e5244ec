//! The MongoDB store behind the [`JobStore`] port: each method forwards to the inherent one
//! (docs/consistency.md, "Compare-and-set", "The outbox", "Archive").

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Store;
use crate::domain::{Job, JobId, Machine, Pipeline, Timestamp};
use crate::ports::{DispatchMark, Found, HistoryRecord, Inserted, JobStore, StoreError};

impl JobStore for Store {
    fn insert_job<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Inserted, StoreError>> {
        Store::insert_job(self, job).boxed()
    }

    fn load_job<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, StoreError>> {
        Store::load_job(self, id).boxed()
    }

    fn job_stamp<'a>(
        &'a self,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<(String, i64)>, StoreError>> {
        Store::job_stamp(self, id).boxed()
    }

    fn latest_run<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Option<Job>, StoreError>> {
        Store::latest_run(self, id).boxed()
    }

    fn compare_and_set<'a>(
        &'a self,
        before: &'a Job,
        after: &'a Job,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Store::compare_and_set(self, before, after).boxed()
    }

    fn compare_and_set_many<'a>(
        &'a self,
        writes: &'a [(&'a Job, &'a Job)],
    ) -> BoxFuture<'a, Result<Vec<Result<bool, StoreError>>, StoreError>> {
        Store::compare_and_set_many(self, writes).boxed()
    }

    fn mark_dispatched<'a>(
        &'a self,
        marks: &'a [DispatchMark],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Store::mark_dispatched(self, marks).boxed()
    }

    fn archive<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), StoreError>> {
        Store::archive(self, job).boxed()
    }

    fn archive_many<'a>(
        &'a self,
        jobs: &'a [&'a Job],
    ) -> BoxFuture<'a, Result<Vec<Result<(), StoreError>>, StoreError>> {
        Store::archive_many(self, jobs).boxed()
    }

    fn load_history<'a>(
        &'a self,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<HistoryRecord>, StoreError>> {
        Store::load_history(self, id).boxed()
    }

    fn ended_jobs<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Found, StoreError>> {
        Store::ended_jobs(self, after, limit).boxed()
    }

    fn jobs_needing_attention<'a>(
        &'a self,
        now: Timestamp,
        cutoff: Timestamp,
        after: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Found, StoreError>> {
        Store::jobs_needing_attention(self, now, cutoff, after, limit).boxed()
    }

    fn get_machine<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Machine>, StoreError>> {
        Store::get_machine(self, id).boxed()
    }

    fn get_pipeline<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pipeline>, StoreError>> {
        Store::get_pipeline(self, id).boxed()
    }

    fn job_bytes(&self, job: &Job) -> Result<usize, StoreError> {
        super::job_bytes(job)
    }

    fn server_time(
        &self,
    ) -> BoxFuture<'_, Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>> {
        Store::server_time(self).boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Store::ping(self).boxed()
    }
}
