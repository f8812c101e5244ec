//! The registry of pipelines and machines (README.md, "Pipelines"; docs/semantics.md,
//! "Where each rule lives"). Bodies become domain values through their validated constructors
//! ([`PipelineBody::into_pipeline`], [`Machine::new`]) before anything is written; the rules
//! that need the store live here: a machine names a registered pipeline, and a pipeline is not
//! deleted while a machine uses it.

use crate::domain::{Machine, MachineBody, Pipeline, PipelineBody, ValidationError};
use crate::store::{Inserted, Store};

use super::Failure;

/// How many machines a refused pipeline deletion names.
const USERS_SHOWN: i64 = 10;

pub use crate::store::Written;

/// Why the catalog refused a change. The text is the message a client sees.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The body breaks a rule of the domain.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// `POST /pipelines` with the id of a registered pipeline.
    #[error("pipeline '{0}' already exists; use PUT to replace it")]
    PipelineExists(String),
    /// The pipeline still runs the jobs of these machines (at most [`USERS_SHOWN`] named).
    #[error("pipeline '{pipeline_id}' is used by machine(s) {}", machines.join(", "))]
    PipelineInUse {
        pipeline_id: String,
        machines: Vec<String>,
    },
    /// A machine names a pipeline that is not registered (the id cut to 100 characters).
    #[error("pipeline '{0}' is not registered")]
    UnknownPipeline(String),
    #[error(transparent)]
    Failed(#[from] Failure),
}

impl From<crate::store::StoreError> for CatalogError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Failed(error.into())
    }
}

/// Pipelines and machines, checked on the way in. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    store: Store,
}

impl Catalog {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The ids of every registered pipeline.
    pub async fn pipeline_ids(&self) -> Result<Vec<String>, Failure> {
        Ok(self.store.pipeline_ids().await?)
    }

    pub async fn pipeline(&self, id: &str) -> Result<Option<Pipeline>, Failure> {
        Ok(self.store.get_pipeline(id).await?)
    }

    /// Registers a new pipeline under the body's id, or a fresh UUID without one; returns
    /// the id.
    pub async fn register_pipeline(&self, body: PipelineBody) -> Result<String, CatalogError> {
        let id = body
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
        let pipeline = body.into_pipeline(id)?;
        match self.store.insert_pipeline(&pipeline).await? {
            Inserted::Created => Ok(pipeline.id),
            Inserted::AlreadyExists => Err(CatalogError::PipelineExists(pipeline.id)),
        }
    }

    /// Creates or replaces the pipeline `id`. Jobs already started keep the stages they
    /// copied.
    pub async fn put_pipeline(
        &self,
        id: String,
        body: PipelineBody,
    ) -> Result<(Pipeline, Written), CatalogError> {
        let pipeline = body.into_pipeline_at(id)?;
        let written = self.store.put_pipeline(&pipeline).await?;
        Ok((pipeline, written))
    }

    /// Deletes the pipeline `id` unless a machine uses it; `false` when there was none.
    pub async fn delete_pipeline(&self, id: &str) -> Result<bool, CatalogError> {
        let machines = self.store.machines_using(id, USERS_SHOWN).await?;
        if !machines.is_empty() {
            return Err(CatalogError::PipelineInUse {
                pipeline_id: id.to_owned(),
                machines,
            });
        }
        Ok(self.store.delete_pipeline(id).await?)
    }

    pub async fn machine(&self, machine_id: &str) -> Result<Option<Machine>, Failure> {
        Ok(self.store.get_machine(machine_id).await?)
    }

    /// Creates or replaces the machine `machine_id`, which must name a registered pipeline.
    pub async fn put_machine(
        &self,
        machine_id: String,
        body: MachineBody,
    ) -> Result<(Machine, Written), CatalogError> {
        let machine = Machine::new(machine_id, body)?;
        if self
            .store
            .get_pipeline(&machine.pipeline_id)
            .await?
            .is_none()
        {
            let shown = machine.pipeline_id.chars().take(100).collect();
            return Err(CatalogError::UnknownPipeline(shown));
        }
        let written = self.store.put_machine(&machine).await?;
        Ok((machine, written))
    }

    /// Deletes the machine; `false` when there was none. Its active jobs run on.
    pub async fn delete_machine(&self, machine_id: &str) -> Result<bool, Failure> {
        Ok(self.store.delete_machine(machine_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_the_messages_clients_see() {
        let exists = CatalogError::PipelineExists("p".into());
        assert_eq!(
            exists.to_string(),
            "pipeline 'p' already exists; use PUT to replace it"
        );
        let in_use = CatalogError::PipelineInUse {
            pipeline_id: "p".into(),
            machines: vec!["m1".into(), "m2".into()],
        };
        assert_eq!(
            in_use.to_string(),
            "pipeline 'p' is used by machine(s) m1, m2"
        );
        let unknown = CatalogError::UnknownPipeline("q".into());
        assert_eq!(unknown.to_string(), "pipeline 'q' is not registered");
    }
}
