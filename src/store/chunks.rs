//! Wide stages' tasks in documents of their own (docs/consistency.md, "Wide stages").
//!
//! A stage with more than [`CHUNK_TASKS`] tasks keeps them in the collection `job_tasks`, in
//! chunks of [`CHUNK_TASKS`], instead of in the job document; the job document keeps, under
//! `task_chunks.<stage_id>`, the id of each chunk's current document. A compare-and-set that
//! changes tasks of a chunk inserts a new document for that chunk (a fresh id), then writes the
//! job with the new id in its pointer: the chunk and the job change together or not at all, as
//! the job document's compare-and-set decides, and a write touches one job document of a few
//! KiB and the chunks it changed, whatever the width. Superseded chunk documents are deleted
//! after the write; any left by a crash go with the job's archive.
//!
//! The domain sees none of this: [`Store::load_job`](super::Store::load_job) puts the tasks back.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::raw::RawDocumentBuf;
use mongodb::bson::{self, Bson, Document, doc};
use serde::{Deserialize, Serialize};

use super::apart::{self, RECORDS};
use super::errors::{malformed, typed_error};
use super::{Store, StoreError};
use crate::domain::{Job, StageRecord, TaskRecord};

/// Tasks per chunk; a stage with more tasks than this keeps them in chunks.
pub const CHUNK_TASKS: usize = 256;

/// The job document's field of chunk pointers: `{<stage_id>: [chunk id, …]}`.
pub const POINTERS: &str = "task_chunks";

/// Whether a stage of `tasks` tasks keeps them in chunks.
pub fn is_wide(tasks: usize) -> bool {
    tasks > CHUNK_TASKS
}

/// `stage` as the job document holds it: without its tasks when they are kept in chunks.
pub fn stored_stage(stage: &StageRecord) -> std::borrow::Cow<'_, StageRecord> {
    if !is_wide(stage.tasks.len()) {
        return std::borrow::Cow::Borrowed(stage);
    }
    std::borrow::Cow::Owned(StageRecord {
        id: stage.id.clone(),
        outputs: stage.outputs.clone(),
        worker_id: stage.worker_id.clone(),
        tasks: Vec::new(),
        started: stage.started,
        completed: stage.completed,
        log: stage.log.clone(),
        error: stage.error.clone(),
        reused_from: stage.reused_from.clone(),
    })
}

/// A chunk document as written.
#[derive(Serialize)]
struct ChunkOut<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    job_id: &'a str,
    run_id: &'a str,
    stage_id: &'a str,
    n: u32,
    /// The job version whose write inserted it.
    v: i64,
    tasks: &'a [TaskRecord],
}

/// A document of `job_tasks` as read: a chunk of tasks, or an ended stage kept apart
/// (`apart.rs`).
#[derive(Debug, Deserialize)]
pub(super) struct ChunkIn {
    #[serde(rename = "_id")]
    id: String,
    /// A chunk's tasks (absent in a record).
    #[serde(default)]
    tasks: Option<Vec<TaskRecord>>,
    /// A record's stage (absent in a chunk).
    #[serde(default)]
    record: Option<StageRecord>,
}

/// What one compare-and-set writes besides the job document.
#[derive(Debug, Default)]
pub struct ChunkWrite {
    /// Chunk documents to insert before the job's compare-and-set.
    pub inserts: Vec<RawDocumentBuf>,
    /// Their ids, to delete if the compare-and-set loses.
    pub inserted: Vec<String>,
    /// `$set`s of the job document: a pointer path and the chunk id (or list of ids) it takes,
    /// or the id of an ended stage's record kept apart (`apart.rs`).
    pub pointers: Vec<(String, Bson)>,
    /// `(stage_id, n)` of each chunk replaced, whose older documents go after a win.
    pub replaced: Vec<(String, u32)>,
}

impl ChunkWrite {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty()
    }

    /// The inserts of several writes, to send in one round trip.
    pub fn merged<'a>(writes: impl Iterator<Item = &'a ChunkWrite>) -> ChunkWrite {
        let mut merged = ChunkWrite::default();
        for write in writes {
            merged.inserts.extend(write.inserts.iter().cloned());
            merged.inserted.extend(write.inserted.iter().cloned());
        }
        merged
    }
}

/// A fresh id for a `job_tasks` document of `stage` of `job`'s run: `<job>/<run>/<stage>/<what>/`
/// and a random part, so a write never reuses the id of a document another write may hold.
pub fn document_id(job: &Job, stage: &StageRecord, what: impl std::fmt::Display) -> String {
    let unique = uuid::Uuid::new_v4().simple();
    format!("{}/{}/{}/{what}/{unique}", job.id, job.run_id, stage.id)
}

/// Every stage of `job`, ended and in flight.
fn all_stages(job: &Job) -> impl Iterator<Item = &StageRecord> {
    job.stages
        .iter()
        .map(Arc::as_ref)
        .chain(job.current_stage.as_ref())
}

/// The chunk documents and pointers that turn `before` (as stored; `None` for a new job) into
/// `after`: every chunk of a wide stage that is new or whose tasks changed, and the record of
/// every large stage that ends (`apart.rs`).
pub fn plan(before: Option<&Job>, after: &Job) -> Result<ChunkWrite, StoreError> {
    let mut write = ChunkWrite::default();
    for stage in all_stages(after).filter(|s| is_wide(s.tasks.len())) {
        let earlier = before.and_then(|b| {
            all_stages(b).find(|s| s.id == stage.id && s.tasks.len() == stage.tasks.len())
        });
        // An ended stage shared by both copies of the job (`Job::stages`) is the same record.
        if earlier.is_some_and(|e| std::ptr::eq(e, stage)) {
            continue;
        }
        let mut ids = Vec::new();
        for (n, tasks) in stage.tasks.chunks(CHUNK_TASKS).enumerate() {
            let unchanged = earlier.is_some_and(|e| {
                let start = n * CHUNK_TASKS;
                e.tasks[start..start + tasks.len()] == *tasks
            });
            if unchanged {
                continue;
            }
            let id = document_id(after, stage, n);
            let chunk = ChunkOut {
                id: &id,
                job_id: after.id.as_str(),
                run_id: &after.run_id,
                stage_id: stage.id.as_str(),
                n: n as u32,
                v: after.version,
                tasks,
            };
            write.inserts.push(
                bson::to_raw_document_buf(&chunk).map_err(|e| StoreError::Encode(e.to_string()))?,
            );
            write.inserted.push(id.clone());
            if earlier.is_some() {
                write
                    .pointers
                    .push((format!("{POINTERS}.{}.{n}", stage.id), Bson::String(id)));
                write
                    .replaced
                    .push((stage.id.as_str().to_owned(), n as u32));
            } else {
                ids.push(Bson::String(id));
            }
        }
        if earlier.is_none() {
            write
                .pointers
                .push((format!("{POINTERS}.{}", stage.id), Bson::Array(ids)));
        }
    }
    apart::plan_records(before, after, &mut write)?;
    Ok(write)
}

/// The chunk ids a job document's `task_chunks` names, by stage id.
fn wanted_chunks(pointers: &Document) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    let mut wanted = Vec::new();
    for (stage, ids) in pointers {
        let Bson::Array(ids) = ids else {
            return Err(malformed(format!("{POINTERS}.{stage} is not a list")));
        };
        let ids = ids
            .iter()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect();
        wanted.push((stage.clone(), ids));
    }
    Ok(wanted)
}

impl Store {
    /// Inserts the chunk documents of a compare-and-set (unordered, one round trip).
    pub(super) async fn insert_chunks(&self, write: &ChunkWrite) -> Result<(), StoreError> {
        if write.inserts.is_empty() {
            return Ok(());
        }
        self.raw_chunks
            .insert_many(write.inserts.iter())
            .ordered(false)
            .await?;
        Ok(())
    }

    /// After the compare-and-set: a win deletes the chunk documents its new ones replaced, a
    /// loss its own. Best effort: what stays is unreferenced, and goes with the archive.
    pub(super) async fn settle_chunks(&self, after: &Job, write: &ChunkWrite, won: bool) {
        if write.is_empty() {
            return;
        }
        let filter = if won {
            if write.replaced.is_empty() {
                return;
            }
            let chunks: Vec<Document> = write
                .replaced
                .iter()
                .map(|(stage, n)| doc! {"stage_id": stage, "n": n})
                .collect();
            doc! {"job_id": after.id.as_str(), "run_id": after.run_id.as_str(),
            "v": {"$lt": after.version}, "$or": chunks}
        } else {
            doc! {"_id": {"$in": &write.inserted}}
        };
        if let Err(error) = self.chunks.delete_many(filter).await {
            tracing::debug!(%error, "superseded task chunks not deleted; the archive deletes them");
        }
    }

    /// Puts back the large ended stages of `job` from their records, as `records` (the job
    /// document's `stage_records`) names them, and the tasks of its wide stages from their
    /// chunks, as `pointers` (its `task_chunks`) names them, read in one query. `Ok(false)` when
    /// a document is missing: the job was written since it was read (a chunk superseded and
    /// deleted) or archived, and is to be read again.
    pub(super) async fn fill_chunks(
        &self,
        job: &mut Job,
        pointers: Option<&Document>,
        records: Option<&Document>,
    ) -> Result<bool, StoreError> {
        let wanted = match pointers {
            Some(pointers) => wanted_chunks(pointers)?,
            None => Vec::new(),
        };
        let records = match records {
            Some(records) => apart::wanted(records)?,
            None => Vec::new(),
        };
        let all: Vec<&String> = wanted
            .iter()
            .flat_map(|(_, ids)| ids)
            .chain(records.iter().map(|(_, id)| id))
            .collect();
        let mut cursor = self.typed_chunks.find(doc! {"_id": {"$in": all}}).await?;
        let mut found: HashMap<String, ChunkIn> = HashMap::new();
        while let Some(chunk) = cursor.try_next().await.map_err(typed_error)? {
            found.insert(chunk.id.clone(), chunk);
        }
        // Records first: a wide stage's record holds no tasks, its chunks do.
        for (stage_id, id) in records {
            match found.remove(&id).and_then(|r| r.record) {
                Some(record) if record.id.as_str() == stage_id => apart::put_back(job, record),
                Some(_) => {
                    return Err(malformed(format!(
                        "{RECORDS}.{stage_id} names another stage"
                    )));
                }
                None => return Ok(false),
            }
        }
        for (stage_id, ids) in wanted {
            let mut tasks = Vec::new();
            for id in &ids {
                match found.remove(id).map(|chunk| chunk.tasks) {
                    Some(Some(chunk)) => tasks.extend(chunk),
                    Some(None) => {
                        let held =
                            format!("{POINTERS}.{stage_id} names {id}, which holds no tasks");
                        return Err(malformed(held));
                    }
                    None => return Ok(false),
                }
            }
            // A stage read from the store is this job's alone: `make_mut` copies nothing.
            let stage = job
                .stages
                .iter_mut()
                .map(Arc::make_mut)
                .chain(job.current_stage.as_mut())
                .find(|s| s.id.as_str() == stage_id);
            if let Some(stage) = stage {
                stage.tasks = tasks;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job whose stage in flight (02) has `width` tasks.
    fn wide_job(width: usize) -> Job {
        crate::fakes::sample_job("chunks", width)
    }

    #[test]
    fn a_narrow_stage_writes_no_chunk() {
        let job = wide_job(CHUNK_TASKS);
        assert!(plan(None, &job).expect("plan").is_empty());
    }

    #[test]
    fn a_new_wide_stage_writes_every_chunk_and_one_pointer_list() {
        let job = wide_job(CHUNK_TASKS * 2 + 1);
        let write = plan(None, &job).expect("plan");
        // And the record of stage 01, whose outputs made them: large enough to go apart.
        assert_eq!(write.inserts.len(), 3 + 1);
        let paths: Vec<&str> = write.pointers.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, [format!("{POINTERS}.02"), format!("{RECORDS}.01")]);
        assert!(write.replaced.is_empty());
    }

    #[test]
    fn a_change_to_one_task_rewrites_only_its_chunk() {
        let before = wide_job(CHUNK_TASKS * 3);
        let mut after = before.clone();
        after.version += 1;
        let stage = after.current_stage.as_mut().expect("stage");
        stage.tasks[CHUNK_TASKS + 5].log = Some("done".into());
        let write = plan(Some(&before), &after).expect("plan");
        assert_eq!(write.inserts.len(), 1);
        assert_eq!(write.pointers.len(), 1);
        assert_eq!(write.pointers[0].0, format!("{POINTERS}.02.1"));
        assert_eq!(write.replaced, vec![("02".to_owned(), 1)]);
    }
}
