//! The move of many ended jobs to history in one round trip per step (a group commit;
//! docs/consistency.md, "Archive" and "Group commit").
//!
//! The common case, a run whose file has no history record yet, takes three round trips for
//! any number of jobs: one query for the records on file, one unordered insert of the new
//! records, one unordered `delete` of the runs from `jobs`, each matched by id, run and
//! version as when a job is archived alone. A job is deleted only once its record's insert was
//! acknowledged. Every other case (a record on file: a rerun or a repeat; an insert that lost
//! to a racing archiver; the same job twice) is archived alone by [`Store::archive`], which
//! plans it against the record, so the rules of the two-step move stay in one place.

use std::collections::HashSet;

use futures::TryStreamExt;
use mongodb::bson::raw::RawDocumentBuf;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;

use super::archive::run_document;
use super::errors::PERMANENT_CODES;
use super::{Store, StoreError};
use crate::domain::Job;

/// The outcome of one job's move.
type Moved = Result<(), StoreError>;

impl Store {
    /// Moves each of `jobs` (ended) to history and deletes it from `jobs` if it is still that
    /// run at that version, as [`Store::archive`] does, with one round trip per step for all
    /// of them. One outcome per job, in order; the outer error says nothing was moved.
    pub async fn archive_many(&self, jobs: &[&Job]) -> Result<Vec<Moved>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let on_file = self.history_on_file(jobs).await?;
        let mut outcomes: Vec<Option<Moved>> = vec![None; jobs.len()];
        let (mut alone, mut fresh) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for (index, job) in jobs.iter().enumerate() {
            if on_file.contains(job.id.as_str()) || !seen.insert(job.id.as_str()) {
                alone.push(index);
                continue;
            }
            match run_document(job) {
                Ok(run) => fresh.push((index, run)),
                Err(error) => outcomes[index] = Some(Err(error)),
            }
        }
        let inserted = self.insert_runs(fresh, &mut outcomes, &mut alone).await;
        self.delete_runs(jobs, &inserted, &mut outcomes).await;
        for index in alone {
            outcomes[index] = Some(self.archive(jobs[index]).await);
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect())
    }

    /// The ids among `jobs` that have a history record.
    async fn history_on_file(&self, jobs: &[&Job]) -> Result<HashSet<String>, StoreError> {
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let found: Vec<Document> = self
            .history
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(found
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }

    /// Inserts the history records `fresh` (`(index, record)`) in one unordered insert and
    /// returns the indexes whose insert was acknowledged. A record that another archiver
    /// inserted first goes to `alone`; any other failure is that job's outcome.
    async fn insert_runs(
        &self,
        fresh: Vec<(usize, RawDocumentBuf)>,
        outcomes: &mut [Option<Moved>],
        alone: &mut Vec<usize>,
    ) -> Vec<usize> {
        if fresh.is_empty() {
            return Vec::new();
        }
        let indexes: Vec<usize> = fresh.iter().map(|(index, _)| *index).collect();
        let records = fresh.into_iter().map(|(_, record)| record);
        let error = match self.raw_history.insert_many(records).ordered(false).await {
            Ok(_) => return indexes,
            Err(error) => error,
        };
        let ErrorKind::InsertMany(failure) = error.kind.as_ref() else {
            let error = StoreError::from(error);
            for &index in &indexes {
                outcomes[index] = Some(Err(error.clone()));
            }
            return Vec::new();
        };
        let mut failed = HashSet::new();
        for written in failure.write_errors.iter().flatten() {
            let Some(&index) = indexes.get(written.index) else {
                continue;
            };
            failed.insert(index);
            if written.code == 11000 {
                alone.push(index);
            } else {
                let text = format!("history write: {} ({})", written.message, written.code);
                outcomes[index] = Some(Err(if PERMANENT_CODES.contains(&written.code) {
                    StoreError::Permanent(text)
                } else {
                    StoreError::Unavailable(text)
                }));
            }
        }
        // Not acknowledged as the write concern asks: the record may be rolled back, so the
        // job stays in `jobs` for a later try.
        if let Some(concern) = &failure.write_concern_error {
            let error = StoreError::Unavailable(format!("history write: {}", concern.message));
            for &index in indexes.iter().filter(|i| !failed.contains(*i)) {
                outcomes[index] = Some(Err(error.clone()));
            }
            return Vec::new();
        }
        indexes
            .into_iter()
            .filter(|i| !failed.contains(i))
            .collect()
    }

    /// Deletes the runs `inserted` (indexes of `jobs`) from `jobs`, each matched by id, run and
    /// version, in one unordered `delete` command; a failure is the job's outcome.
    async fn delete_runs(&self, jobs: &[&Job], inserted: &[usize], outcomes: &mut [Option<Moved>]) {
        if inserted.is_empty() {
            return;
        }
        let deletes: Vec<Document> = inserted
            .iter()
            .map(|&index| {
                let job = jobs[index];
                let filter = doc! {"_id": job.id.as_str(), "run_id": job.run_id.as_str(), "version": job.version};
                doc! {"q": filter, "limit": 1}
            })
            .collect();
        let mut command = doc! {"delete": self.jobs.name(), "deletes": deletes, "ordered": false};
        self.add_write_concern(&mut command);
        let failures = match self.db.run_command(command).await {
            Ok(reply) => delete_failures(&reply, inserted.len()),
            Err(error) => vec![Some(StoreError::from(error)); inserted.len()],
        };
        let mut deleted = Vec::new();
        for (&index, failure) in inserted.iter().zip(failures) {
            match failure {
                Some(error) => outcomes[index] = Some(Err(error)),
                None => deleted.push(index),
            }
        }
        // The runs' task chunks and stage records go once no job document names them: any job
        // may have a record (an ended stage over 16 KiB), so every run is asked, in one command.
        let runs: Vec<&Job> = deleted.iter().map(|&index| jobs[index]).collect();
        if let Err(error) = self.delete_runs_chunks(&runs).await {
            for index in deleted {
                outcomes[index] = Some(Err(error.clone()));
            }
        }
    }
}

/// Per statement of a `delete` command of `count` statements, its error if it failed.
fn delete_failures(reply: &Document, count: usize) -> Vec<Option<StoreError>> {
    let mut failures = vec![None; count];
    if let Ok(concern) = reply.get_document("writeConcernError") {
        let error = StoreError::Unavailable(format!("delete not acknowledged: {concern}"));
        failures = vec![Some(error); count];
    }
    for error in reply.get_array("writeErrors").into_iter().flatten() {
        let index = error.as_document().and_then(|d| d.get_i32("index").ok());
        if let Some(slot) = index
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| failures.get_mut(i))
        {
            *slot = Some(StoreError::Unavailable(format!(
                "delete from jobs: {error}"
            )));
        }
    }
    failures
}
