//! The `jobs` collection: the active jobs, written only by compare-and-set on
//! `{_id, run_id, version}` (docs/consistency.md, "Compare-and-set"), plus the outbox mark that
//! changes no version (docs/consistency.md, "The outbox") and the sweep's queries.

use futures::TryStreamExt;
use mongodb::bson::raw::{RawArrayBuf, RawDocumentBuf};
use mongodb::bson::{self, Bson, Document, doc};

use super::documents::{insert, to_doc};
use super::errors::{PERMANENT_CODES, malformed};
use super::{
    ACTIVE_STATUSES, Found, Inserted, STARTED_STATUSES, Store, StoreError, apart, chunks, update,
};

/// How often a job is read again when one of its task chunks went missing between reading the
/// job and its chunks (another write superseded it).
const LOAD_ATTEMPTS: usize = 4;

/// The most task chunks one sweep query looks at for jobs with overdue or unconfirmed tasks.
const CHUNKED_SCAN_LIMIT: i64 = 10_000;
use crate::domain::{Job, JobId, JobStatus, TaskId, Timestamp};
use crate::ports::DispatchMark;

/// The size of `job` as stored.
pub fn job_bytes(job: &Job) -> Result<usize, StoreError> {
    bson::to_vec(job)
        .map(|bytes| bytes.len())
        .map_err(|e| StoreError::Encode(e.to_string()))
}

impl Store {
    /// Inserts a new job; `AlreadyExists` when a job with its id is active.
    pub async fn insert_job(&self, job: &Job) -> Result<Inserted, StoreError> {
        let write = chunks::plan(None, job)?;
        if write.is_empty() {
            return insert(&self.jobs, to_doc(job, "id")?).await;
        }
        // A job that starts with a wide or large stage (none does today): those first.
        let mut stored = job.clone();
        for stage in stored.stages.iter_mut() {
            *stage = std::sync::Arc::new(apart::stored_form(stage, &write.pointers).into_owned());
        }
        if let Some(stage) = stored.current_stage.as_mut() {
            *stage = chunks::stored_stage(stage).into_owned();
        }
        let mut document = to_doc(&stored, "id")?;
        for (path, value) in write.pointers.iter().cloned() {
            // `task_chunks.<stage>` or `stage_records.<stage>`: a new job has no chunk to replace.
            let Some((field, stage)) = path.split_once('.') else {
                continue;
            };
            let pointers = document
                .entry(field.to_owned())
                .or_insert(Bson::Document(Document::new()));
            if let Bson::Document(pointers) = pointers {
                pointers.insert(stage, value);
            }
        }
        self.insert_chunks(&write).await?;
        let inserted = insert(&self.jobs, document).await?;
        if inserted == Inserted::AlreadyExists {
            self.settle_chunks(job, &write, false).await;
        }
        Ok(inserted)
    }

    /// The active job `id`, with the tasks of its wide stages put back from their chunks.
    pub async fn load_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        for _ in 0..LOAD_ATTEMPTS {
            let Some(raw) = self.raw_jobs.find_one(doc! {"_id": id.as_str()}).await? else {
                return Ok(None);
            };
            if let Some(job) = self.decode_job(&raw).await? {
                return Ok(Some(job));
            }
        }
        Err(StoreError::Contention(format!(
            "job {id}: its task chunks changed under {LOAD_ATTEMPTS} reads"
        )))
    }

    /// The run and version of the active job `id`, without reading the rest of it: what a
    /// watcher reads to learn whether the job changed since its last full read.
    pub async fn job_stamp(&self, id: &JobId) -> Result<Option<(String, i64)>, StoreError> {
        let found = self
            .raw_jobs
            .find_one(doc! {"_id": id.as_str()})
            .projection(doc! {"run_id": 1, "version": 1})
            .await?;
        let Some(raw) = found else {
            return Ok(None);
        };
        let run_id = raw.get_str("run_id").map_err(malformed)?.to_owned();
        let version = match raw.get_i64("version") {
            Ok(version) => version,
            Err(_) => i64::from(raw.get_i32("version").map_err(malformed)?),
        };
        Ok(Some((run_id, version)))
    }

    /// A stored job document as a [`Job`], its wide stages' tasks read from their chunks;
    /// `None` when a chunk is gone (the job was written since: read it again).
    async fn decode_job(&self, raw: &RawDocumentBuf) -> Result<Option<Job>, StoreError> {
        let mut job: Job = bson::from_slice(raw.as_bytes()).map_err(malformed)?;
        let field = |name: &str| match raw.get_document(name) {
            Ok(found) => Document::try_from(found).map(Some).map_err(malformed),
            Err(_) => Ok(None),
        };
        let (pointers, records) = (field(chunks::POINTERS)?, field(apart::RECORDS)?);
        if pointers.is_none() && records.is_none() {
            return Ok(Some(job));
        }
        let filled = self
            .fill_chunks(&mut job, pointers.as_ref(), records.as_ref())
            .await?;
        Ok(filled.then_some(job))
    }

    /// Turns the stored `before` into `after` if the stored version is still `before.version`,
    /// writing only the fields that differ (and the task chunks of wide stages that changed,
    /// first). Returns whether it won.
    pub async fn compare_and_set(&self, before: &Job, after: &Job) -> Result<bool, StoreError> {
        debug_assert_eq!(after.version, before.version + 1);
        let chunks = chunks::plan(Some(before), after)?;
        self.insert_chunks(&chunks).await?;
        let update = update::job_update(before, after, &chunks.pointers)?;
        let reply = self
            .db
            .run_raw_command(self.update_command(before, update))
            .await;
        let won = reply
            .map_err(StoreError::from)
            .and_then(|r| matched_one(&r));
        // After an error the write may have landed or not: its chunks stay (the archive takes
        // them if they are not referenced).
        if let Ok(won) = won {
            self.settle_chunks(after, &chunks, won).await;
        }
        won
    }

    /// The `update` command of a compare-and-set, sent as raw BSON: the driver's `update_one`
    /// takes a `Document`, and a wide stage's update is megabytes.
    fn update_command(&self, before: &Job, update: RawDocumentBuf) -> RawDocumentBuf {
        let mut updates = RawArrayBuf::new();
        updates.push(cas_statement(before, update));
        self.raw_update_command(updates)
    }

    /// An `update` command of `statements` on `jobs`, with the collection's write concern.
    pub(super) fn raw_update_command(&self, statements: RawArrayBuf) -> RawDocumentBuf {
        let mut command = RawDocumentBuf::new();
        command.append("update", self.jobs.name());
        command.append("updates", statements);
        // A raw command does not take the connection string's write concern by itself.
        if let Some(concern) = self.jobs.write_concern()
            && let Ok(concern) = bson::to_raw_document_buf(concern)
            && !concern.is_empty()
        {
            command.append("writeConcern", concern);
        }
        command
    }

    /// Writes outbox marks, of any jobs, as the statements of one `update` command per collection
    /// (`jobs`, and `job_tasks` for wide stages; sent together), unordered: a statement that matches nothing, because the stage moved on or another
    /// run took the job's place, changes nothing and does not stop the others). A mark changes
    /// no version: it races with nothing that matters, and a lost one only causes a harmless
    /// re-publish by the relay.
    pub async fn mark_dispatched(&self, marks: &[DispatchMark]) -> Result<(), StoreError> {
        let (wide, narrow): (Vec<&DispatchMark>, Vec<&DispatchMark>) = marks
            .iter()
            .partition(|mark| chunks::is_wide(mark.stage_tasks));
        let (in_chunks, in_jobs) = futures::join!(self.mark_chunks(&wide), self.mark_jobs(&narrow));
        in_chunks.and(in_jobs)
    }

    /// The outbox marks of tasks kept in job documents, as one unordered `update` command.
    async fn mark_jobs(&self, marks: &[&DispatchMark]) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        let updates: Vec<Document> = marks.iter().map(|mark| mark_statement(mark)).collect();
        let command = doc! {"update": self.jobs.name(), "updates": updates, "ordered": false};
        self.write_unordered(command, marks.len(), "outbox marks")
            .await
    }

    /// Adds the collection's write concern to a command on `jobs` (a command run as such
    /// does not take the connection string's by itself).
    pub(super) fn add_write_concern(&self, command: &mut Document) {
        if let Some(concern) = self.jobs.write_concern()
            && let Ok(concern) = bson::to_document(concern)
            && !concern.is_empty()
        {
            command.insert("writeConcern", concern);
        }
    }

    /// Runs an unordered write `command` (with the write concern), failing with the first of
    /// its `writeErrors`, if any, as "`<n>` of `<count>` `<what>` not written".
    pub(super) async fn write_unordered(
        &self,
        mut command: Document,
        count: usize,
        what: &str,
    ) -> Result<(), StoreError> {
        self.add_write_concern(&mut command);
        let reply = self.db.run_command(command).await?;
        match reply.get_array("writeErrors") {
            Ok(errors) if !errors.is_empty() => Err(StoreError::Unavailable(format!(
                "{} of {count} {what} not written: {}",
                errors.len(),
                errors[0]
            ))),
            _ => Ok(()),
        }
    }

    /// How many jobs are active (pending, running, paused or held).
    pub async fn count_active(&self) -> Result<u64, StoreError> {
        let filter = doc! {"status": {"$in": &ACTIVE_STATUSES[..]}};
        Ok(self.jobs.count_documents(filter).await?)
    }

    /// At most `limit` jobs matching `filter` whose id comes after `after`, in id order (none
    /// when `limit` is not positive). Each document is decoded on its own: one that does not
    /// decode is logged, counted and skipped, so it cannot stop the others.
    async fn find_jobs(
        &self,
        mut filter: Document,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Found, StoreError> {
        // MongoDB reads a limit of 0 as none and a negative one as one batch of that many; the
        // port promises at most `limit`.
        if limit <= 0 {
            return Ok(Found::default());
        }
        if let Some(after) = after {
            filter.insert("_id", doc! {"$gt": after});
        }
        let mut cursor = self
            .raw_jobs
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await?;
        let mut found = Found::default();
        while let Some(raw) = cursor.try_next().await? {
            found.read += 1;
            found.last = raw.get_str("_id").ok().map(str::to_owned);
            match self.decode_job(&raw).await {
                Ok(Some(job)) => found.jobs.push(job),
                // Written since it was listed; the next sweep sees it again.
                Ok(None) => tracing::debug!("a listed job's task chunks changed; skipped"),
                Err(StoreError::Malformed(error)) => {
                    crate::meter::undecodable("jobs");
                    let id = raw.get("_id").ok().flatten().map(|v| format!("{v:?}"));
                    tracing::warn!(id = id.as_deref().unwrap_or("?"), %error, "a stored job does not decode; skipped");
                }
                Err(other) => return Err(other),
            }
        }
        Ok(found)
    }

    /// Jobs that ended but are still in `jobs` (a move to history that did not complete), in id
    /// order after `after`.
    pub async fn ended_jobs(&self, after: Option<&str>, limit: i64) -> Result<Found, StoreError> {
        let filter = doc! {"status": {"$nin": &ACTIVE_STATUSES[..]}};
        self.find_jobs(filter, after, limit).await
    }

    /// Active jobs the sweep should look at, in id order after `after`: pending since before
    /// `cutoff`, or started (running, paused or held) with a task that is overdue at `now` or was recorded before
    /// `cutoff` and never confirmed. The last id read lets the next call go on from there (so
    /// a batch of jobs that fail every time cannot hide the rest).
    pub async fn jobs_needing_attention(
        &self,
        now: Timestamp,
        cutoff: Timestamp,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Found, StoreError> {
        let overdue = doc! {"status": "pending", "deadline": {"$lt": now.to_string()}};
        let unconfirmed = doc! {"status": "pending", "dispatched": {"$exists": false},
        "issued": {"$lt": cutoff.to_string()}};
        // Wide stages keep their tasks in chunks: the jobs those name join the query by id.
        let mut wide = self
            .jobs_with_chunked_tasks(overdue.clone(), CHUNKED_SCAN_LIMIT)
            .await?;
        wide.extend(
            self.jobs_with_chunked_tasks(unconfirmed.clone(), CHUNKED_SCAN_LIMIT)
                .await?,
        );
        // A paused or held job still has tasks in flight: they time out and are re-published.
        let running = doc! {"$in": &STARTED_STATUSES[..]};
        let filter = doc! {"$or": [
            {"status": JobStatus::Pending.as_str(), "created": {"$lt": cutoff.to_string()}},
            {"status": running.clone(), "current_stage.tasks": {"$elemMatch": overdue}},
            {"status": running.clone(), "current_stage.tasks": {"$elemMatch": unconfirmed}},
            {"status": running, "_id": {"$in": wide}},
        ]};
        self.find_jobs(filter, after, limit).await
    }
}

/// The `update` statement of one outbox mark.
fn mark_statement(mark: &DispatchMark) -> Document {
    let ids: Vec<&str> = mark.task_ids.iter().map(TaskId::as_str).collect();
    doc! {
        "q": {"_id": mark.job_id.as_str(), "run_id": mark.run_id.as_str(), "current_stage.id": mark.stage_id.as_str()},
        "u": {"$set": {"current_stage.tasks.$[t].dispatched": mark.at.to_string()}},
        "arrayFilters": [{"t.task_id": {"$in": ids}}],
    }
}

/// The `update` statement of the compare-and-set from `before`: `update` applied if the stored
/// job is still `before`'s run at `before.version`.
pub(super) fn cas_statement(before: &Job, update: RawDocumentBuf) -> RawDocumentBuf {
    // The run is part of the match: a rerun of the same file keeps the job id and counts
    // versions from 0 again, so `{_id, version}` alone could match another run.
    let mut filter = RawDocumentBuf::new();
    filter.append("_id", before.id.as_str());
    filter.append("run_id", before.run_id.as_str());
    filter.append("version", before.version);
    let mut statement = RawDocumentBuf::new();
    statement.append("q", filter);
    statement.append("u", update);
    statement
}

/// The error of a compare-and-set's statement that the server reported in `writeErrors`: the
/// server refuses the value as sent (a code in [`PERMANENT_CODES`]), or asks to retry.
pub(super) fn statement_error(error: &Bson) -> StoreError {
    let code = error.as_document().and_then(|d| d.get_i32("code").ok());
    if code.is_some_and(|c| PERMANENT_CODES.contains(&c)) {
        return StoreError::Refused(error.to_string());
    }
    StoreError::Contention(format!("the server asked to retry: {error}"))
}

/// The error of a write the server did not acknowledge as the write concern asks (a primary
/// stepping down): not durable as asked, so not a success. A retry finds the change applied
/// or not.
pub(super) fn concern_error(error: &Document) -> StoreError {
    StoreError::Contention(format!(
        "the write was not acknowledged as the write concern asks: {error}"
    ))
}

/// The number of statements an `update` reply says matched (`n`).
pub(super) fn matched(reply: &Document) -> Result<i64, StoreError> {
    match reply.get("n") {
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        Some(Bson::Int64(n)) => Ok(*n),
        _ => Err(malformed(format!("update reply without a count: {reply}"))),
    }
}

/// Reads the reply of a compare-and-set: one document matched is a win, none a lost race.
fn matched_one(reply: &Document) -> Result<bool, StoreError> {
    if let Ok(errors) = reply.get_array("writeErrors")
        && let Some(first) = errors.first()
    {
        return Err(statement_error(first));
    }
    // The write may not have reached the write concern's members: not a success.
    if let Ok(error) = reply.get_document("writeConcernError") {
        return Err(concern_error(error));
    }
    Ok(matched(reply)? == 1)
}
