//! The catalog: pipelines and the machines that run them, kept by id. A job copies the
//! pipeline's stages and the machine's configs when it starts, so edits here never disturb a job
//! in flight (docs/semantics.md, "Starting a job").

use mongodb::bson::doc;

use super::documents::{delete_by_id, get_by_id, insert, put_by_id, string_ids, to_doc};
use super::{Inserted, Store, StoreError, Written};
use crate::domain::{Machine, Pipeline};

impl Store {
    pub async fn insert_pipeline(&self, pipeline: &Pipeline) -> Result<Inserted, StoreError> {
        insert(&self.pipelines, to_doc(pipeline, "id")?).await
    }

    /// Creates or replaces; returns whether it created.
    pub async fn put_pipeline(&self, pipeline: &Pipeline) -> Result<Written, StoreError> {
        put_by_id(&self.pipelines, &pipeline.id, to_doc(pipeline, "id")?).await
    }

    pub async fn get_pipeline(&self, id: &str) -> Result<Option<Pipeline>, StoreError> {
        get_by_id(&self.pipelines, id, "id").await
    }

    /// Ids of the registered pipelines, in id order.
    pub async fn pipeline_ids(&self) -> Result<Vec<String>, StoreError> {
        let cursor = self
            .pipelines
            .find(doc! {})
            .projection(doc! {"_id": 1})
            .sort(doc! {"_id": 1})
            .await?;
        string_ids(cursor).await
    }

    /// Deletes; returns whether it existed.
    pub async fn delete_pipeline(&self, id: &str) -> Result<bool, StoreError> {
        delete_by_id(&self.pipelines, id).await
    }

    /// Machines that run the pipeline, at most `limit`.
    pub async fn machines_using(
        &self,
        pipeline_id: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let cursor = self
            .machines
            .find(doc! {"pipeline_id": pipeline_id})
            .projection(doc! {"_id": 1})
            .limit(limit)
            .await?;
        string_ids(cursor).await
    }

    /// Creates or replaces; returns whether it created.
    pub async fn put_machine(&self, machine: &Machine) -> Result<Written, StoreError> {
        put_by_id(
            &self.machines,
            &machine.machine_id,
            to_doc(machine, "machine_id")?,
        )
        .await
    }

    pub async fn get_machine(&self, id: &str) -> Result<Option<Machine>, StoreError> {
        get_by_id(&self.machines, id, "machine_id").await
    }

    /// Deletes; returns whether it existed.
    pub async fn delete_machine(&self, id: &str) -> Result<bool, StoreError> {
        delete_by_id(&self.machines, id).await
    }
}
