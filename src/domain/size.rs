//! Sizes of values, estimated without copying or encoding them, so budgets can be checked
//! before anything large is built.

use serde_json::{Map, Value};

/// About how many bytes `value` takes as JSON text (exact but for number widths and string
/// escapes); its BSON form is of the same order.
pub fn json_size(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(map) => map_size(map),
    }
}

/// [`json_size`] of an object.
pub fn map_size(map: &Map<String, Value>) -> usize {
    2 + map
        .iter()
        .map(|(key, value)| key.len() + 4 + json_size(value))
        .sum::<usize>()
}

/// Whole mebibytes, rounded up, for messages.
pub fn mib(bytes: usize) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).ceil() / 10.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_estimate_is_close_to_the_encoded_size() {
        let value = json!({"a": "x".repeat(1000), "b": [1, null, true, {"c": "d"}], "e": {}});
        let exact = serde_json::to_vec(&value).expect("encodes").len();
        let estimate = json_size(&value);
        assert!(estimate >= exact, "{estimate} < {exact}");
        assert!(estimate < exact + 100, "{estimate} vs {exact}");
    }
}
