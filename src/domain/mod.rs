//! The pure core: pipelines, jobs, input mapping and the job state machine. No I/O, no async.

pub mod engine;
pub mod ids;
pub mod job;
pub mod machine;
pub mod mapping;
pub mod pipeline;
pub mod size;
pub mod time;
pub mod validation;
pub mod values;

pub use engine::{Decision, Effect, Event, Ignored, Notice, TaskResult, apply, apply_in_place};
pub use ids::{IdError, JobId, StageId, TaskId};
pub use job::{Job, JobStatus, JobView, StageRecord, TaskRecord, TaskStatus};
pub use machine::{Machine, MachineBody};
pub use pipeline::{Pipeline, PipelineBody, StageSpec};
pub use time::Timestamp;
pub use validation::ValidationError;
