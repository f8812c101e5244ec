//! Machines: which pipeline a machine's jobs run, with configs for every task
//! (docs/vocabulary.md; docs/semantics.md, "Configs"). [`Machine::new`] holds the rules a
//! machine passes before it is registered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::pipeline::MAX_CONFIGS_BYTES;
use super::validation::{ValidationError, configs_too_large, invalid};
use super::values::check_keys;

/// Longest machine id, in bytes.
pub const MAX_MACHINE_ID_LEN: usize = 200;

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

impl Machine {
    /// The machine `machine_id` as `body` describes it, when it keeps the rules: an id of
    /// 1–[`MAX_MACHINE_ID_LEN`] bytes (from the URL, so its error has no body path), and
    /// configs that can be stored as they are and take at most [`MAX_CONFIGS_BYTES`] as JSON.
    /// Whether the pipeline exists is for the catalog to say.
    pub fn new(machine_id: String, body: MachineBody) -> Result<Self, ValidationError> {
        if machine_id.trim().is_empty() || machine_id.len() > MAX_MACHINE_ID_LEN {
            return Err(invalid(
                "",
                format!("a machine id must be 1-{MAX_MACHINE_ID_LEN} bytes"),
            ));
        }
        check_keys(&body.configs)
            .map_err(|e| invalid(format!("$.configs{}", e.path), e.message))?;
        if configs_too_large(&body.configs) {
            return Err(invalid(
                "$.configs",
                format!("configs must be at most {MAX_CONFIGS_BYTES} bytes as JSON"),
            ));
        }
        Ok(Self {
            machine_id,
            pipeline_id: body.pipeline_id,
            configs: body.configs,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(configs: Value) -> MachineBody {
        MachineBody {
            pipeline_id: "p".into(),
            configs: configs.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn a_machine_keeps_its_id_pipeline_and_configs() {
        let machine = Machine::new("m".into(), body(json!({"speed": 3}))).expect("valid");
        assert_eq!(machine.machine_id, "m");
        assert_eq!(machine.pipeline_id, "p");
        assert_eq!(machine.configs["speed"], 3);
    }

    #[test]
    fn a_blank_or_long_machine_id_is_refused_without_a_body_path() {
        for id in [
            String::new(),
            "  ".into(),
            "m".repeat(MAX_MACHINE_ID_LEN + 1),
        ] {
            let error = Machine::new(id, body(json!({}))).expect_err("refused");
            assert_eq!(error.path, "");
            assert_eq!(error.message, "a machine id must be 1-200 bytes");
        }
        assert!(Machine::new("m".repeat(MAX_MACHINE_ID_LEN), body(json!({}))).is_ok());
    }

    #[test]
    fn configs_that_cannot_be_stored_are_refused_with_their_path() {
        let error =
            Machine::new("m".into(), body(json!({"a": [{"$set": 1}]}))).expect_err("refused");
        assert_eq!(error.path, "$.configs.a[0].$set");
        let big = json!({"big": "x".repeat(MAX_CONFIGS_BYTES)});
        let error = Machine::new("m".into(), body(big)).expect_err("refused");
        assert_eq!(error.path, "$.configs");
        assert!(error.message.contains("at most 16384 bytes"), "{error}");
    }
}
