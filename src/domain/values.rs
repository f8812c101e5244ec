//! Rules on client values that the database will keep as they are: the outputs a task returns
//! and the `configs` of workers and machines (docs/semantics.md, "Results and the next stage",
//! "Configs" and "Where each rule lives").
//! Keys MongoDB would refuse or misread, integers BSON cannot hold, long strings and keys and
//! deep nesting are refused with the JSON path of the value, so a client can fix what it sent.
//! the wire types' module (`messages`) re-exports them.

use serde_json::{Map, Value};

/// Most outputs one task may return.
pub const MAX_TASK_OUTPUTS: usize = 100_000;
/// Deepest nesting accepted in outputs, inputs and configs.
pub const MAX_DEPTH: usize = 32;
/// Longest string value accepted in outputs and configs, in bytes.
pub const MAX_STRING_LEN: usize = 64 * 1024;
/// Longest key accepted in outputs and configs, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// A value that cannot be taken: what is wrong, and where (a JSON path relative to the value
/// checked, such as `.a.b[2]`; empty for the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub path: String,
    pub message: String,
}

impl ValueError {
    fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} (at {})", self.message, self.path)
        }
    }
}

/// Turns a result's `outputs` into the list the stage record keeps: an object becomes one
/// output, `null` one `null` output, and a list is taken as it is.
pub fn normalize_outputs(outputs: Value) -> Result<Vec<Value>, ValueError> {
    let listed = outputs.is_array();
    let list = match outputs {
        Value::Object(_) | Value::Null => vec![outputs],
        Value::Array(items) => items,
        other => {
            return Err(ValueError::new(
                "",
                format!(
                    "outputs must be an object, a list or null, not {}",
                    kind(&other)
                ),
            ));
        }
    };
    if list.len() > MAX_TASK_OUTPUTS {
        return Err(ValueError::new(
            "",
            format!(
                "a task may return at most {MAX_TASK_OUTPUTS} outputs, got {}",
                list.len()
            ),
        ));
    }
    for (i, item) in list.iter().enumerate() {
        let path = if listed {
            format!("[{i}]")
        } else {
            String::new()
        };
        match item {
            Value::Null => {}
            Value::Object(map) => check_map(map, &path, 1)?,
            other => {
                return Err(ValueError::new(
                    &path,
                    format!("an output must be an object or null, not {}", kind(other)),
                ));
            }
        }
    }
    Ok(list)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Checks that `map` can be stored as it is: refuses keys that MongoDB would refuse or
/// misread, integers BSON cannot hold, long strings and keys, and nesting deeper than
/// [`MAX_DEPTH`]. The error's path is relative to `map`.
pub fn check_keys(map: &Map<String, Value>) -> Result<(), ValueError> {
    check_map(map, "", 1)
}

fn check_map(map: &Map<String, Value>, path: &str, depth: usize) -> Result<(), ValueError> {
    if depth > MAX_DEPTH {
        return Err(ValueError::new(
            path,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    for (key, value) in map {
        let shown: String = key.chars().take(64).collect();
        let inner = format!("{path}.{}", shown.escape_debug());
        if key.starts_with('$') || key.contains('\0') || key.is_empty() {
            return Err(ValueError::new(
                &inner,
                "a key may not be empty, start with '$' or hold NUL",
            ));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(ValueError::new(
                &inner,
                format!("a key is longer than {MAX_KEY_LEN} bytes"),
            ));
        }
        check_value(value, &inner, depth + 1)?;
    }
    Ok(())
}

fn check_value(value: &Value, path: &str, depth: usize) -> Result<(), ValueError> {
    if depth > MAX_DEPTH {
        return Err(ValueError::new(
            path,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    match value {
        Value::Object(map) => check_map(map, path, depth),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_value(v, &format!("{path}[{i}]"), depth + 1)),
        Value::String(text) if text.len() > MAX_STRING_LEN => Err(ValueError::new(
            path,
            format!(
                "a string of {} bytes exceeds the limit of {MAX_STRING_LEN}",
                text.len()
            ),
        )),
        // BSON has signed 64-bit integers and doubles only: a larger integer cannot be stored
        // as sent (and a double would silently change it), so it is refused.
        Value::Number(number) if number.is_u64() && number.as_i64().is_none() => {
            Err(ValueError::new(
                path,
                format!(
                    "the integer {number} is outside the signed 64-bit range the database stores; send it as a string"
                ),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn outputs_normalise_object_list_and_null() {
        assert_eq!(
            normalize_outputs(json!({"a": 1})),
            Ok(vec![json!({"a": 1})])
        );
        assert_eq!(normalize_outputs(Value::Null), Ok(vec![Value::Null]));
        assert_eq!(
            normalize_outputs(json!([{"a": 1}, null])),
            Ok(vec![json!({"a": 1}), Value::Null])
        );
        assert_eq!(normalize_outputs(json!([])), Ok(vec![]));
    }

    #[test]
    fn outputs_of_the_wrong_type_are_refused() {
        assert!(normalize_outputs(json!("x")).is_err());
        assert!(normalize_outputs(json!([1])).is_err());
        assert!(normalize_outputs(json!([{"$set": 1}])).is_err());
    }

    #[test]
    fn long_strings_and_keys_are_refused() {
        assert!(normalize_outputs(json!({"a": "x".repeat(MAX_STRING_LEN + 1)})).is_err());
        assert!(normalize_outputs(json!({"a": "x".repeat(MAX_STRING_LEN)})).is_ok());
        let mut long_key = Map::new();
        long_key.insert("k".repeat(MAX_KEY_LEN + 1), json!(1));
        assert!(check_keys(&long_key).is_err());
    }

    #[test]
    fn integers_beyond_the_signed_64_bit_range_are_refused_with_their_path() {
        let error =
            normalize_outputs(json!([{"ok": 1}, {"a": {"b": [1, 18446744073709551615u64]}}]))
                .expect_err("refused");
        assert_eq!(error.path, "[1].a.b[1]");
        assert!(error.message.contains("18446744073709551615"), "{error}");
        assert!(normalize_outputs(json!({"a": i64::MAX, "b": i64::MIN, "c": 1e300})).is_ok());
        let configs = json!({"seed": 9223372036854775808u64});
        let error = check_keys(configs.as_object().expect("object")).expect_err("refused");
        assert_eq!(error.path, ".seed");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut value = json!(1);
        for _ in 0..40 {
            value = json!({"a": value});
        }
        assert!(normalize_outputs(value).is_err());
    }
}
