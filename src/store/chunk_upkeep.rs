//! The upkeep of `job_tasks` besides a job's own writes and reads (`chunks.rs`): the outbox
//! marks of tasks kept in chunks, the sweep's query over them, and the deletes after an archive.

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::{Store, StoreError};
use crate::domain::Job;
use crate::ports::DispatchMark;

impl Store {
    /// Sets the outbox mark on tasks kept in chunks (any document holding them: a superseded
    /// one changes nothing that is read).
    pub(super) async fn mark_chunks(&self, marks: &[&DispatchMark]) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        let updates: Vec<Document> = marks
            .iter()
            .map(|mark| {
                let ids: Vec<&str> = mark.task_ids.iter().map(|t| t.as_str()).collect();
                doc! {
                    "q": {"job_id": mark.job_id.as_str(), "run_id": mark.run_id.as_str(),
                          "stage_id": mark.stage_id.as_str(), "tasks.task_id": {"$in": &ids}},
                    "u": {"$set": {"tasks.$[t].dispatched": mark.at.to_string()}},
                    "arrayFilters": [{"t.task_id": {"$in": &ids}}],
                    "multi": true,
                }
            })
            .collect();
        let command = doc! {"update": self.chunks.name(), "updates": updates, "ordered": false};
        self.write_unordered(command, marks.len(), "outbox marks of task chunks")
            .await
    }

    /// Ids of started jobs (running, paused, held) with a task kept in chunks that `task` matches (the sweep's
    /// conditions on a pending task), at most `limit`.
    pub(super) async fn jobs_with_chunked_tasks(
        &self,
        task: Document,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut cursor = self
            .chunks
            .find(doc! {"tasks": {"$elemMatch": task}})
            .projection(doc! {"job_id": 1, "_id": 0})
            .limit(limit)
            .await?;
        let mut ids = Vec::new();
        while let Some(chunk) = cursor.try_next().await? {
            if let Ok(id) = chunk.get_str("job_id")
                && !ids.iter().any(|known: &String| known == id)
            {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    /// Deletes every `job_tasks` document (task chunks, stage records) of the runs of `jobs`
    /// (after their archive), in one unordered `delete` command.
    pub(super) async fn delete_runs_chunks(&self, jobs: &[&Job]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let deletes: Vec<Document> = jobs
            .iter()
            .map(|job| {
                let run = doc! {"job_id": job.id.as_str(), "run_id": job.run_id.as_str()};
                doc! {"q": run, "limit": 0}
            })
            .collect();
        let command = doc! {"delete": self.chunks.name(), "deletes": deletes, "ordered": false};
        self.write_unordered(command, jobs.len(), "deletes of archived runs' task chunks")
            .await
    }

    /// Deletes every chunk document of `job`'s run (after its archive).
    pub(super) async fn delete_chunks(&self, job: &Job) -> Result<(), StoreError> {
        let filter = doc! {"job_id": job.id.as_str(), "run_id": job.run_id.as_str()};
        self.chunks.delete_many(filter).await?;
        Ok(())
    }
}
