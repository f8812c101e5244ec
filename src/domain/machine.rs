//! Machines: which pipeline a machine's jobs run, with configs for every task
//! (docs/vocabulary.md; docs/semantics.md, "Configs").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A registered machine: which pipeline its jobs run, and configs for every task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Machine {
    pub machine_id: String,
    pub pipeline_id: String,
    #[serde(default)]
    pub configs: Map<String, Value>,
}

/// A machine body as clients send it to `PUT /machines/{machine_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineBody {
    pub pipeline_id: String,
    #[serde(default)]
    pub configs: Map<String, Value>,
}
