//! Large ended stages in documents of their own (docs/consistency.md, "Wide stages").
//!
//! A stage that ends is never changed again, but the job document it ends in is rewritten by
//! every later write of the job: a fan-out stage's 10,000 outputs would be copied by the server
//! on every result of the stage that follows. So an ended stage whose record takes more than
//! [`APART_BYTES`] is written once, in the write that ends it, as a document of `job_tasks`
//! (beside the task chunks, and deleted with them by the archive); the job document keeps a
//! stub of it (its fields without `outputs` and `tasks`) and, under `stage_records.<stage_id>`,
//! the id of the record. Loads put the record back; the domain sees none of this.

use std::borrow::Cow;
use std::sync::Arc;

use mongodb::bson::{self, Bson, Document};
use serde::Serialize;

use super::StoreError;
use super::chunks::{ChunkWrite, document_id, stored_stage};
use super::errors::malformed;
use crate::domain::{Job, StageRecord};

/// The job document's field of stages kept apart: `{<stage_id>: record id}`.
pub const RECORDS: &str = "stage_records";

/// An ended stage whose stored record takes more than this many bytes is kept apart.
pub const APART_BYTES: usize = 16 * 1024;

/// A stage record document as written.
#[derive(Serialize)]
struct RecordOut<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    job_id: &'a str,
    run_id: &'a str,
    stage_id: &'a str,
    /// The job version whose write inserted it.
    v: i64,
    record: &'a StageRecord,
}

/// How many of `after`'s ended stages `before` (as stored) holds already: all of `before`'s
/// when `after` only appended to them (the engine never changes an ended stage), else none
/// (the update then writes them all again). Compared by id and end time, not in full: the
/// ended stages of a fan-out are megabytes, and this runs on every write.
pub fn ended_kept(before: &Job, after: &Job) -> Option<usize> {
    let kept = before.stages.len();
    let appended = after.stages.len() >= kept
        && before
            .stages
            .iter()
            .zip(&after.stages)
            .all(|(b, a)| b.id == a.id && b.completed == a.completed);
    debug_assert!(
        !appended || after.stages[..kept] == before.stages[..],
        "an ended stage changed"
    );
    appended.then_some(kept)
}

/// Adds to `write` a record document, and its pointer, for every stage that ends in `after`
/// (is not stored yet) and takes more than [`APART_BYTES`].
pub fn plan_records(
    before: Option<&Job>,
    after: &Job,
    write: &mut ChunkWrite,
) -> Result<(), StoreError> {
    let new = before.and_then(|b| ended_kept(b, after)).unwrap_or(0);
    for stage in &after.stages[new..] {
        let stored = stored_stage(stage);
        let id = document_id(after, stage, "record");
        let record = RecordOut {
            id: &id,
            job_id: after.id.as_str(),
            run_id: &after.run_id,
            stage_id: stage.id.as_str(),
            v: after.version,
            record: &stored,
        };
        let document =
            bson::to_raw_document_buf(&record).map_err(|e| StoreError::Encode(e.to_string()))?;
        if document.as_bytes().len() <= APART_BYTES {
            continue;
        }
        write.inserts.push(document);
        write.inserted.push(id.clone());
        write
            .pointers
            .push((format!("{RECORDS}.{}", stage.id), Bson::String(id)));
    }
    Ok(())
}

/// `stage` as the job document holds it, given the `pointers` of the write: a stub when the
/// write keeps it apart, else [`stored_stage`].
pub fn stored_form<'a>(
    stage: &'a StageRecord,
    pointers: &[(String, Bson)],
) -> Cow<'a, StageRecord> {
    let path = format!("{RECORDS}.{}", stage.id);
    if !pointers.iter().any(|(p, _)| *p == path) {
        return stored_stage(stage);
    }
    Cow::Owned(StageRecord {
        outputs: Vec::new(),
        tasks: Vec::new(),
        ..stored_stage(stage).into_owned()
    })
}

/// The record ids a job document's `stage_records` names, by stage id.
pub fn wanted(records: &Document) -> Result<Vec<(String, String)>, StoreError> {
    records
        .iter()
        .map(|(stage, id)| match id {
            Bson::String(id) => Ok((stage.clone(), id.clone())),
            _ => Err(malformed(format!("{RECORDS}.{stage} is not a string"))),
        })
        .collect()
}

/// Puts a stage record back in place of its stub in `job`.
pub fn put_back(job: &mut Job, record: StageRecord) {
    if let Some(stage) = job.stages.iter_mut().find(|s| s.id == record.id) {
        *stage = Arc::new(record);
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::Document;

    use super::*;
    use crate::domain::{Event, Timestamp, apply_in_place};
    use crate::fakes::{done, new_sample_job};
    use crate::store::chunks::{POINTERS, plan};
    use crate::store::update::job_update;

    /// A running job whose first stage (01) is in flight, and the job once that stage's one task
    /// answered with `parts` outputs: 01 ended, 02 in flight with `parts` tasks.
    fn split(parts: usize) -> (Job, Job) {
        let now = Timestamp::now();
        let mut before = new_sample_job(&format!("apart-{parts}"), now);
        apply_in_place(&mut before, &Event::Start, now).expect("starts");
        let task = before.current_stage.as_ref().expect("01").tasks[0]
            .task_id
            .clone();
        let outputs = (0..parts).map(|n| serde_json::json!({"part": n})).collect();
        let mut after = before.clone();
        apply_in_place(&mut after, &done(&task, outputs), now).expect("recorded");
        after.version = before.version + 1;
        (before, after)
    }

    /// The update from `before` to `after` with `write`'s pointers, and the first stage it
    /// pushes.
    fn pushed(before: &Job, after: &Job, write: &ChunkWrite) -> (Document, Document) {
        let update = job_update(before, after, &write.pointers).expect("update");
        let update = Document::try_from(update.as_ref()).expect("a document");
        let stage = update
            .get_document("$push")
            .and_then(|p| p.get_document("stages"))
            .and_then(|s| s.get_array("$each"))
            .ok()
            .and_then(|each| each.first()?.as_document().cloned())
            .expect("a stage pushed");
        (update, stage)
    }

    fn record_pointers(write: &ChunkWrite) -> Vec<&str> {
        let prefix = format!("{RECORDS}.");
        let paths = write.pointers.iter().map(|(path, _)| path.as_str());
        paths.filter(|p| p.starts_with(&prefix)).collect()
    }

    #[test]
    fn a_large_stage_that_ends_is_written_apart_once() {
        let (before, after) = split(2_000);
        let write = plan(Some(&before), &after).expect("plan");
        assert_eq!(record_pointers(&write), [format!("{RECORDS}.01")]);
        let chunks = write
            .pointers
            .iter()
            .filter(|(p, _)| p.starts_with(POINTERS));
        assert_eq!(chunks.count(), 1, "stage 02's chunk list");
        assert_eq!(write.inserts.len(), 2_000usize.div_ceil(256) + 1);

        // The update pushes a stub of 01: no outputs, no tasks, the rest kept.
        let (update, stub) = pushed(&before, &after, &write);
        assert_eq!(stub.get_str("id"), Ok("01"));
        assert_eq!(stub.get_array("outputs").map(Vec::len), Ok(0));
        assert!(!stub.contains_key("tasks"));
        assert!(stub.contains_key("completed"));
        let set = update.get_document("$set").expect("$set");
        assert!(set.contains_key(format!("{RECORDS}.01")));

        // Later writes leave it alone.
        let mut next = after.clone();
        next.version += 1;
        next.current_stage.as_mut().expect("02").tasks[7].log = Some("x".into());
        let write = plan(Some(&after), &next).expect("plan");
        assert!(record_pointers(&write).is_empty());
    }

    #[test]
    fn a_small_stage_that_ends_stays_in_the_job_document() {
        let (before, after) = split(3);
        let write = plan(Some(&before), &after).expect("plan");
        assert!(write.is_empty(), "{:?}", write.pointers);
        let (_, stage) = pushed(&before, &after, &write);
        assert_eq!(stage.get_array("outputs").map(Vec::len), Ok(3));
    }

    #[test]
    fn only_appended_stages_count_as_kept() {
        let (before, after) = split(3);
        assert_eq!(ended_kept(&before, &after), Some(before.stages.len()));
        let mut rewound = after.clone();
        rewound.stages.truncate(0);
        assert_eq!(ended_kept(&after, &rewound), None);
    }
}
