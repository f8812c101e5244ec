//! The `history` collection: moving an ended job there, and reading it back
//! (docs/consistency.md, "Archive").
//!
//! A history record holds the latest run of a file on top and its earlier runs, oldest first,
//! under `previous_runs`. Each run is known by its `run_id`, so the move is safe to repeat and
//! safe to race: a run already on record is not written again, and the record is replaced only
//! if its top run is still the one this archiver read (a compare-and-set on `run_id`). Then the
//! job leaves `jobs`, matched by id, run and version, so a later run of the same file is never
//! deleted by a late archiver of an earlier one.

use mongodb::bson::doc;
use mongodb::bson::raw::{RawArrayBuf, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::bson::{self, Bson};

use super::documents::from_doc;
use super::errors::{is_duplicate_key, malformed};
use super::{HistoryRecord, MAX_PREVIOUS_RUNS, Store, StoreError};
use crate::domain::{Job, JobId};

/// The most a history record may take, earlier runs included.
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// How often the history write is tried when other archivers change the record meanwhile.
const ATTEMPTS: usize = 8;

/// What one attempt at the history write found and does.
enum Plan {
    /// The run is on record already (on top or among the earlier runs).
    OnRecord,
    /// No record yet: insert this one.
    Insert(RawDocumentBuf),
    /// Replace the record whose top run id is `top` (`Null`: a record without one).
    Replace { top: Bson, record: RawDocumentBuf },
}

impl Store {
    /// Moves an ended job to history, then deletes it from `jobs` if it is still this run at
    /// this version, and then the task chunks of its wide stages.
    ///
    /// Built from raw BSON throughout: a wide job's record is megabytes, and a `Document` tree
    /// of it takes many times that in memory.
    pub async fn archive(&self, job: &Job) -> Result<(), StoreError> {
        let run = run_document(job)?;
        let id = job.id.as_str();
        let mut written = false;
        for _ in 0..ATTEMPTS {
            let existing = self.raw_history.find_one(doc! {"_id": id}).await?;
            let mut plan = plan(existing.as_deref(), &run, job)?;
            if matches!(plan, Plan::Replace { .. }) && !self.holds_run(job).await? {
                // Not on record and no longer in `jobs`: another archiver moved it, and the
                // record has since dropped it as one of its oldest runs. Nothing to write.
                plan = Plan::OnRecord;
            }
            written = match plan {
                Plan::OnRecord => true,
                Plan::Insert(record) => match self.raw_history.insert_one(record).await {
                    Ok(_) => true,
                    Err(e) if is_duplicate_key(&e) => false,
                    Err(e) => return Err(e.into()),
                },
                Plan::Replace { top, record } => {
                    let filter = doc! {"_id": id, "run_id": top};
                    self.raw_history
                        .replace_one(filter, record)
                        .await?
                        .matched_count
                        == 1
                }
            };
            if written {
                break;
            }
        }
        if !written {
            return Err(StoreError::Contention(format!(
                "the history record of job '{id}' kept changing; the sweep will finish the move"
            )));
        }
        let deleted = self
            .jobs
            .delete_one(doc! {"_id": id, "run_id": job.run_id.as_str(), "version": job.version})
            .await?
            .deleted_count;
        // The run's task chunks go once no job document can name them.
        if deleted == 1 || !self.holds_run(job).await? {
            self.delete_chunks(job).await?;
        }
        Ok(())
    }

    /// The history record of the file with job id `id`. An earlier run that does not decode is
    /// logged, counted and left out, so it cannot hide the others.
    pub async fn load_history(&self, id: &JobId) -> Result<Option<HistoryRecord>, StoreError> {
        let Some(mut document) = self.history.find_one(doc! {"_id": id.as_str()}).await? else {
            return Ok(None);
        };
        let previous_runs = match document.remove("previous_runs") {
            Some(Bson::Array(runs)) => runs
                .into_iter()
                .filter_map(|run| match run {
                    Bson::Document(d) => from_doc(d, "id")
                        .inspect_err(|error| {
                            crate::meter::undecodable("history");
                            tracing::warn!(job_id = %id, %error, "an earlier run in history does not decode; not shown");
                        })
                        .ok(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Some(HistoryRecord {
            job: from_doc(document, "id")?,
            previous_runs,
        }))
    }

    /// The run on top of the history record of job `id`, read without its earlier runs.
    pub async fn latest_run(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let found = self
            .history
            .find_one(doc! {"_id": id.as_str()})
            .projection(doc! {"previous_runs": 0})
            .await?;
        found.map(|document| from_doc(document, "id")).transpose()
    }

    /// Whether `jobs` still holds this run of the job.
    async fn holds_run(&self, job: &Job) -> Result<bool, StoreError> {
        let filter = doc! {"_id": job.id.as_str(), "run_id": job.run_id.as_str()};
        Ok(self.jobs.count_documents(filter).limit(1).await? > 0)
    }
}

/// The job as a history run: its fields with `id` as `_id`.
pub(super) fn run_document(job: &Job) -> Result<RawDocumentBuf, StoreError> {
    let encoded = bson::to_raw_document_buf(job).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut run = RawDocumentBuf::new();
    run.append("_id", job.id.as_str());
    for element in encoded.iter() {
        let (key, value) = element.map_err(malformed)?;
        if key != "id" {
            run.append_ref(key, value);
        }
    }
    Ok(run)
}

/// Decides the history write for `run` (of `job`) against the record on file, if any.
fn plan(
    existing: Option<&RawDocument>,
    run: &RawDocumentBuf,
    job: &Job,
) -> Result<Plan, StoreError> {
    let Some(existing) = existing else {
        return Ok(Plan::Insert(run.clone()));
    };
    let mut runs = earlier_runs(existing);
    let is_this_run = |doc: &RawDocument| doc.get_str("run_id").ok() == Some(job.run_id.as_str());
    if is_this_run(existing) || runs.iter().any(|r| is_this_run(r)) {
        return Ok(Plan::OnRecord);
    }
    // The run is still in `jobs` (the caller checks), so it is later than every run on record:
    // runs of a file follow each other, a new one starting only once the last left `jobs`.
    let top = match existing.get("run_id").map_err(malformed)? {
        Some(value) => Bson::try_from(value.to_raw_bson()).map_err(malformed)?,
        None => Bson::Null,
    };
    runs.push(as_earlier_run(existing)?);
    Ok(Plan::Replace {
        top,
        record: build_record(as_earlier_run(run)?, runs)?,
    })
}

/// The record's earlier runs, oldest first.
fn earlier_runs(record: &RawDocument) -> Vec<RawDocumentBuf> {
    let Ok(runs) = record.get_array("previous_runs") else {
        return Vec::new();
    };
    runs.into_iter()
        .flatten()
        .filter_map(|run| match run {
            RawBsonRef::Document(run) => Some(run.to_raw_document_buf()),
            _ => None,
        })
        .collect()
}

/// A run as kept in `previous_runs`: its fields without `_id` and `previous_runs`, `id` first.
fn as_earlier_run(record: &RawDocument) -> Result<RawDocumentBuf, StoreError> {
    let mut run = RawDocumentBuf::new();
    for element in record.iter() {
        let (key, value) = element.map_err(malformed)?;
        match key {
            "_id" => run.append_ref("id", value),
            "previous_runs" => {}
            _ => run.append_ref(key, value),
        }
    }
    Ok(run)
}

/// A record with `top` on top (as an earlier run: `id`, turned back into `_id`) and the newest
/// of `previous` that fit under the caps.
fn build_record(
    top: RawDocumentBuf,
    mut previous: Vec<RawDocumentBuf>,
) -> Result<RawDocumentBuf, StoreError> {
    let mut record = RawDocumentBuf::new();
    for element in top.iter() {
        let (key, value) = element.map_err(malformed)?;
        match key {
            "id" => record.append_ref("_id", value),
            _ => record.append_ref(key, value),
        }
    }
    if previous.len() > MAX_PREVIOUS_RUNS {
        previous.drain(..previous.len() - MAX_PREVIOUS_RUNS);
    }
    // Keep the newest earlier runs that fit beside this one under the document cap.
    let mut room = MAX_RECORD_BYTES.saturating_sub(record.as_bytes().len());
    let mut kept = 0;
    for run in previous.iter().rev() {
        let bytes = run.as_bytes().len() + 16;
        if bytes > room {
            break;
        }
        room -= bytes;
        kept += 1;
    }
    if kept < previous.len() {
        tracing::warn!(
            dropped = previous.len() - kept,
            "earlier runs dropped from a history record to keep it under the document cap"
        );
        previous.drain(..previous.len() - kept);
    }
    if !previous.is_empty() {
        let mut runs = RawArrayBuf::new();
        for run in previous {
            runs.push(run);
        }
        record.append("previous_runs", runs);
    }
    Ok(record)
}
