//! The update that turns a stored job into its next version: `$set`, `$unset` and `$push` of
//! only what changed, instead of the whole document.
//!
//! A result for one task of a 10,000-task stage changes a handful of fields of one task; sending
//! the whole document for it made every write megabytes long. A field-level update also leaves
//! alone what it does not change, such as the outbox mark (`dispatched`) that another write may
//! have set on a task since the job was read. The update is built as raw BSON: a new or ended
//! wide stage is megabytes, and a `Document` tree of it takes many times that in memory.

use mongodb::bson::raw::{RawArrayBuf, RawBson, RawBsonRef, RawDocumentBuf};
use mongodb::bson::{self, Bson, Document};
use serde::Serialize;

use super::StoreError;
use super::apart::{ended_kept, stored_form};
use super::chunks::{is_wide, stored_stage};
use crate::domain::{Job, StageRecord, TaskRecord};

fn encode_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Encode(error.to_string())
}

/// A value wrapped in a document, the unit raw BSON is serialised in.
#[derive(Serialize)]
struct Wrapped<'a, T: Serialize> {
    v: &'a T,
}

/// `value` as a raw document `{v: value}`.
fn wrap<T: Serialize>(value: &T) -> Result<RawDocumentBuf, StoreError> {
    bson::to_raw_document_buf(&Wrapped { v: value }).map_err(encode_error)
}

/// `$set`, `$unset` and `$push` under construction.
#[derive(Default)]
struct Changes {
    set: RawDocumentBuf,
    unset: RawDocumentBuf,
    push: RawDocumentBuf,
}

impl Changes {
    /// Sets `path` to `value`, or unsets it when `value` is absent (`None` serialises as null,
    /// and absent optional fields are not stored).
    fn put<T: Serialize>(&mut self, path: &str, value: &T) -> Result<(), StoreError> {
        let wrapped = wrap(value)?;
        match wrapped.get("v").map_err(encode_error)? {
            None | Some(RawBsonRef::Null) => self.unset.append(path, ""),
            Some(value) => self.set.append_ref(path, value),
        }
        Ok(())
    }

    /// Sets `path` to `after` when it differs from `before`.
    fn field<T: Serialize + PartialEq>(
        &mut self,
        path: &str,
        before: &T,
        after: &T,
    ) -> Result<(), StoreError> {
        if before != after {
            self.put(path, after)?;
        }
        Ok(())
    }

    fn into_update(self) -> RawDocumentBuf {
        let mut update = RawDocumentBuf::new();
        update.append("$set", self.set);
        if !self.unset.is_empty() {
            update.append("$unset", self.unset);
        }
        if !self.push.is_empty() {
            update.append("$push", self.push);
        }
        update
    }
}

/// The update from `before` (as read, with `version` n) to `after` (with `version` n + 1).
/// Apply it with the filter `{_id, run_id, version: n}`. The tasks of wide stages are not in
/// the job document: `pointers` are the `$set`s of their chunk ids (`chunks.rs` `plan`).
pub fn job_update(
    before: &Job,
    after: &Job,
    pointers: &[(String, Bson)],
) -> Result<RawDocumentBuf, StoreError> {
    Ok(changes(before, after, pointers)?.into_update())
}

/// [`job_update`], which also records `token` as the write of `after.version` in the job's
/// short list of write tokens ([`WRITE_TOKENS`]), so that the outcome of a statement of a
/// group commit can be read back (`store/group.rs`).
pub fn job_update_with_token(
    before: &Job,
    after: &Job,
    pointers: &[(String, Bson)],
    token: &str,
) -> Result<RawDocumentBuf, StoreError> {
    let mut c = changes(before, after, pointers)?;
    let mut entry = RawDocumentBuf::new();
    entry.append("v", after.version);
    entry.append("t", token);
    let mut entries = RawArrayBuf::new();
    entries.push(entry);
    let mut each = RawDocumentBuf::new();
    each.append("$each", entries);
    each.append("$slice", -TOKENS_KEPT);
    c.push.append(WRITE_TOKENS, each);
    Ok(c.into_update())
}

/// The stored field that keeps the last [`TOKENS_KEPT`] write tokens of a job's run, as
/// `{v: version written, t: token}`, oldest first. Internal to the store: no [`Job`] field
/// (a `Job` decodes without it, unknown fields being ignored), so no API, event or history
/// record shows it (an archived run is written from the `Job`).
pub const WRITE_TOKENS: &str = "write_tokens";

/// How many write tokens a job keeps: a group commit's statement is judged by its token as
/// long as fewer writes than this came after it (`store/group.rs`).
pub const TOKENS_KEPT: i32 = 8;

/// The changes from `before` to `after`, with the chunk `pointers` of wide stages.
fn changes(before: &Job, after: &Job, pointers: &[(String, Bson)]) -> Result<Changes, StoreError> {
    let mut c = Changes::default();
    for (path, id) in pointers {
        let id = RawBson::try_from(id.clone()).map_err(encode_error)?;
        c.set.append(path.as_str(), id);
    }
    // Fields that a run never changes are compared too, so the update stays right if one ever
    // does; comparing them costs nothing next to the write.
    c.field("run_id", &before.run_id, &after.run_id)?;
    c.field("machine_id", &before.machine_id, &after.machine_id)?;
    c.field("pipeline_id", &before.pipeline_id, &after.pipeline_id)?;
    c.field("hash", &before.hash, &after.hash)?;
    c.field("file_name", &before.file_name, &after.file_name)?;
    c.field("status", &before.status, &after.status)?;
    c.field("created", &before.created, &after.created)?;
    c.field("started", &before.started, &after.started)?;
    c.field("completed", &before.completed, &after.completed)?;
    c.field("error", &before.error, &after.error)?;
    c.field("pipeline", &before.pipeline, &after.pipeline)?;
    c.field(
        "machine_configs",
        &before.machine_configs,
        &after.machine_configs,
    )?;
    c.put("version", &after.version)?;

    // Ended stages are only ever appended; a large one goes apart (`apart.rs`).
    let stored = |stage| stored_form(stage, pointers);
    if let Some(kept) = ended_kept(before, after) {
        if after.stages.len() > kept {
            let added: Vec<_> = after.stages[kept..].iter().map(|s| stored(s)).collect();
            let added = wrap(&added)?;
            let mut each = RawDocumentBuf::new();
            if let Some(list) = added.get("v").map_err(encode_error)? {
                each.append_ref("$each", list);
            }
            c.push.append("stages", each);
        }
    } else {
        let stages: Vec<_> = after.stages.iter().map(|s| stored(s)).collect();
        c.put("stages", &stages)?;
    }

    match (&before.current_stage, &after.current_stage) {
        (Some(b), Some(a)) if b.id == a.id => stage_changes(&mut c, b, a)?,
        (b, a) if b != a => c.put("current_stage", &a.as_ref().map(stored_stage))?,
        _ => {}
    }
    Ok(c)
}

/// The changes within the stage in flight, down to the fields of each changed task.
fn stage_changes(c: &mut Changes, b: &StageRecord, a: &StageRecord) -> Result<(), StoreError> {
    c.field("current_stage.outputs", &b.outputs, &a.outputs)?;
    c.field("current_stage.worker_id", &b.worker_id, &a.worker_id)?;
    c.field("current_stage.started", &b.started, &a.started)?;
    c.field("current_stage.completed", &b.completed, &a.completed)?;
    c.field("current_stage.log", &b.log, &a.log)?;
    c.field("current_stage.error", &b.error, &a.error)?;
    if is_wide(a.tasks.len()) && b.tasks.len() == a.tasks.len() {
        // Kept in chunks: written by `chunks.rs`.
        return Ok(());
    }
    if b.tasks.len() != a.tasks.len() {
        return match is_wide(a.tasks.len()) {
            true => c.put("current_stage.tasks", &Vec::<TaskRecord>::new()),
            false => c.put("current_stage.tasks", &a.tasks),
        };
    }
    for (index, (bt, at)) in b.tasks.iter().zip(&a.tasks).enumerate() {
        if bt != at {
            task_changes(c, &format!("current_stage.tasks.{index}"), bt, at)?;
        }
    }
    Ok(())
}

/// `$set`/`$unset` of the fields of one task that differ.
fn task_changes(
    c: &mut Changes,
    path: &str,
    b: &TaskRecord,
    a: &TaskRecord,
) -> Result<(), StoreError> {
    let encode = |t: &TaskRecord| -> Result<Document, StoreError> {
        bson::to_document(t).map_err(encode_error)
    };
    let (before, after) = (encode(b)?, encode(a)?);
    for (key, value) in &after {
        if before.get(key) != Some(value) {
            let value = RawBson::try_from(value.clone()).map_err(encode_error)?;
            c.set.append(format!("{path}.{key}"), value);
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            c.unset.append(format!("{path}.{key}"), "");
        }
    }
    // The outbox mark belongs to an attempt. A new attempt's mark is written even when `before`
    // has the same, for a mark of the old attempt may have landed since `before` was read (a
    // worker failed fast on another replica): left alone, it would pass for the new attempt's,
    // and the relay would never publish the new attempt if its own publish failed.
    if b.task_id != a.task_id && before.get("dispatched") == after.get("dispatched") {
        match after.get("dispatched") {
            Some(value) => {
                let value = RawBson::try_from(value.clone()).map_err(encode_error)?;
                c.set.append(format!("{path}.dispatched"), value);
            }
            None => c.unset.append(format!("{path}.dispatched"), ""),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pipeline::fixtures;
    use crate::domain::{Event, JobStatus, TaskResult, Timestamp, apply_in_place};

    fn now() -> Timestamp {
        Timestamp::parse("2020-07-16T10:15:53.278087Z").expect("valid")
    }

    fn started_job() -> Job {
        let pipeline = fixtures::seed_pipeline();
        let mut job = Job::new(
            "m",
            "h",
            "file.csv",
            &pipeline.id,
            pipeline.stages,
            Default::default(),
            "run".into(),
            now(),
        );
        apply_in_place(&mut job, &Event::Start, now()).expect("start");
        job.version = 1;
        job
    }

    /// A result for `task_id`.
    fn result(task_id: &crate::domain::TaskId, error: Option<&str>) -> Event {
        Event::Result(TaskResult {
            task_id: task_id.clone(),
            run_id: None,
            outputs: vec![serde_json::json!({"csv_file": "x"})],
            log: None,
            error: error.map(str::to_owned),
        })
    }

    /// The update from `before` to `after` with the next version, as a `Document`.
    fn update_of(before: &Job, mut after: Job) -> Document {
        after.version = before.version + 1;
        job_update(before, &after, &[])
            .expect("update")
            .to_document()
            .expect("a document")
    }

    fn keys(update: &Document, operator: &str) -> Vec<String> {
        update
            .get_document(operator)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The stored fields of a job and a stage that the update knows about. A new field fails
    /// this test until `job_update` compares it too.
    #[test]
    fn the_update_knows_every_stored_field() {
        let mut job = started_job();
        job.started = Some(now());
        job.completed = Some(now());
        job.error = Some("e".into());
        let document = bson::to_document(&job).expect("encode");
        let mut stored: Vec<&str> = document.keys().map(String::as_str).collect();
        stored.sort_unstable();
        assert_eq!(
            stored,
            [
                "completed",
                "created",
                "current_stage",
                "error",
                "file_name",
                "hash",
                "id",
                "machine_configs",
                "machine_id",
                "pipeline",
                "pipeline_id",
                "run_id",
                "stages",
                "started",
                "status",
                "version"
            ]
        );
        let mut stage = job.current_stage.clone().expect("stage in flight");
        stage.completed = Some(now());
        stage.log = Some("l".into());
        stage.error = Some("e".into());
        let document = bson::to_document(&stage).expect("encode");
        let mut stored: Vec<&str> = document.keys().map(String::as_str).collect();
        stored.sort_unstable();
        assert_eq!(
            stored,
            [
                "completed",
                "error",
                "id",
                "log",
                "outputs",
                "started",
                "tasks",
                "worker_id"
            ]
        );
    }

    #[test]
    fn a_stage_that_ends_is_pushed_and_the_next_one_set() {
        let before = started_job();
        let mut after = before.clone();
        let task_id = &before.current_stage.as_ref().expect("stage").tasks[0].task_id;
        // Stage 01 has one task, so its result ends the stage and plans stage 02.
        apply_in_place(&mut after, &result(task_id, None), now()).expect("apply");
        let update = update_of(&before, after);
        let set = keys(&update, "$set");
        assert!(set.contains(&"version".to_owned()));
        assert!(!set.contains(&"pipeline".to_owned()), "{set:?}");
        assert!(!set.contains(&"stages".to_owned()), "{set:?}");
        // The ended stage 01 is appended, and stage 02 replaces the stage in flight.
        assert_eq!(keys(&update, "$push"), ["stages"]);
        assert!(set.contains(&"current_stage".to_owned()), "{set:?}");
    }

    #[test]
    fn a_result_within_a_wide_stage_touches_one_task() {
        let mut before = started_job();
        let stage = before.current_stage.as_mut().expect("stage");
        let template = stage.tasks[0].clone();
        stage.tasks = (0..100)
            .map(|i| {
                let mut t = template.clone();
                t.task_id = crate::domain::TaskId::derive("run", &stage.id, i, 1);
                t.dispatched = Some(now());
                t
            })
            .collect();
        let event = result(&stage.tasks[42].task_id, None);
        let mut after = before.clone();
        apply_in_place(&mut after, &event, now()).expect("apply");
        let update = update_of(&before, after);
        let mut set = keys(&update, "$set");
        set.sort();
        assert_eq!(
            set,
            [
                "current_stage.tasks.42.completed",
                "current_stage.tasks.42.outputs",
                "current_stage.tasks.42.status",
                "version"
            ]
        );
        assert!(update.get("$unset").is_none(), "{update:?}");
        assert!(update.get("$push").is_none(), "{update:?}");
    }

    #[test]
    fn a_retry_unsets_the_outbox_mark_of_the_superseded_attempt() {
        let mut before = started_job();
        let stage = before.current_stage.as_mut().expect("stage");
        stage.tasks[0].dispatched = Some(now());
        let event = result(&stage.tasks[0].task_id, Some("boom"));
        let mut after = before.clone();
        apply_in_place(&mut after, &event, now().plus_seconds(5)).expect("apply");
        let update = update_of(&before, after);
        assert_eq!(
            keys(&update, "$unset"),
            ["current_stage.tasks.0.dispatched"]
        );
        let set = keys(&update, "$set");
        for field in [
            "task_id",
            "attempt",
            "previous_ids",
            "error",
            "issued",
            "deadline",
        ] {
            assert!(
                set.contains(&format!("current_stage.tasks.0.{field}")),
                "{field} missing from {set:?}"
            );
        }
    }

    #[test]
    fn a_retry_unsets_the_outbox_mark_even_when_it_was_read_without_one() {
        let before = started_job();
        let stage = before.current_stage.as_ref().expect("stage");
        let event = result(&stage.tasks[0].task_id, Some("boom"));
        let mut after = before.clone();
        apply_in_place(&mut after, &event, now().plus_seconds(5)).expect("apply");
        let update = update_of(&before, after);
        assert_eq!(
            keys(&update, "$unset"),
            ["current_stage.tasks.0.dispatched"]
        );
    }

    #[test]
    fn ending_the_job_moves_the_stage_in_flight() {
        let before = started_job();
        let mut after = before.clone();
        apply_in_place(&mut after, &Event::Abort, now()).expect("abort");
        assert_eq!(after.status, JobStatus::Aborted);
        let update = update_of(&before, after);
        assert_eq!(keys(&update, "$unset"), ["current_stage"]);
        assert_eq!(keys(&update, "$push"), ["stages"]);
        let mut set = keys(&update, "$set");
        set.sort();
        assert_eq!(set, ["completed", "error", "status", "version"]);
    }
}
