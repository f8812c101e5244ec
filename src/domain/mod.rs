//! The pure core: pipelines, machines, jobs, input mapping, the rules on client values and the
//! job state machine. No I/O, no async (docs/README.md, "The parts and how they depend on each
//! other").

pub mod changes;
pub mod engine;
pub mod ids;
pub mod job;
pub mod machine;
pub mod mapping;
pub mod new_job;
pub mod pipeline;
pub mod rerun;
pub mod size;
pub mod time;
pub mod validation;
pub mod values;

pub use engine::{Decision, Effect, Event, Ignored, Notice, TaskResult, apply, apply_in_place};
pub use ids::{IdError, JobId, StageId, TaskId};
pub use job::{Job, JobStatus, JobView, StageRecord, TaskRecord, TaskStatus};
pub use machine::{Machine, MachineBody};
pub use new_job::{NewJob, NewJobBody};
pub use pipeline::{Pipeline, PipelineBody, StageSpec};
pub use time::Timestamp;
pub use validation::ValidationError;
