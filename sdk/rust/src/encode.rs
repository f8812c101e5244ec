//! The body of a stage-result. Outputs the coordinator would refuse (the wrong shape, an
//! integer beyond 64 signed bits, a result over 4 MiB) or that do not serialise become an
//! `error` result saying why, so the job shows the reason instead of the task timing out.

use serde_json::Value;

use crate::wire::{Dispatch, StageResult};

/// The largest result body the coordinator takes; it dead-letters a larger one unread.
pub const MAX_RESULT_BYTES: usize = 4 * 1024 * 1024;
/// The coordinator keeps this much of `log` and `error`.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// `text` cut to [`MAX_TEXT_BYTES`] (at a character boundary), marked when cut.
pub fn clip(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …[cut]");
    }
    text
}

/// What a JSON value is, for messages.
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

/// Why `outputs` cannot be sent, or `None`: the shape the protocol allows (an object, a list of
/// objects and `null`s, or `null`) and integers within the signed 64-bit range.
pub fn check_outputs(outputs: &Value) -> Option<String> {
    let shape = |path: String, value: &Value| {
        format!(
            "outputs must be an object, a list of objects and nulls, or null, not {} (at {path})",
            kind(value)
        )
    };
    match outputs {
        Value::Null | Value::Object(_) => {}
        Value::Array(items) => {
            if let Some((i, item)) = items
                .iter()
                .enumerate()
                .find(|(_, item)| !matches!(item, Value::Null | Value::Object(_)))
            {
                return Some(shape(format!("$[{i}]"), item));
            }
        }
        other => return Some(shape("$".into(), other)),
    }
    let (path, number) = first_wide_integer(outputs)?;
    Some(format!(
        "outputs cannot be sent as JSON: integer {number} is outside the signed 64-bit range (at {path})"
    ))
}

/// The path and text of the first integer above `i64::MAX` in `value` (serde_json holds such
/// numbers as `u64`; the coordinator stores signed 64-bit integers only).
fn first_wide_integer(value: &Value) -> Option<(String, String)> {
    let mut stack = vec![("$".to_owned(), value)];
    while let Some((path, value)) = stack.pop() {
        match value {
            Value::Number(number) if number.as_u64().is_some_and(|n| n > i64::MAX as u64) => {
                return Some((path, number.to_string()));
            }
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, item)| (format!("{path}[{i}]"), item)),
            ),
            Value::Object(fields) => {
                let fields: Vec<_> = fields.iter().collect();
                stack.extend(
                    fields
                        .into_iter()
                        .rev()
                        .map(|(key, item)| (format!("{path}.{key}"), item)),
                );
            }
            _ => {}
        }
    }
    None
}

/// What a handler came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The outputs, as JSON.
    Outputs(Value),
    /// The handler failed (returned an error or panicked): the reason.
    Failed(String),
    /// The outputs did not serialise: the reason.
    Unsendable(String),
}

/// A result body, and why the outputs could not be sent when they could not.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) body: Vec<u8>,
    pub(crate) unsendable: Option<String>,
}

/// The result body for `dispatch`, echoing its ids. Outputs that cannot be sent give an `error`
/// result with the reason (the log is kept).
pub(crate) fn encode_result(dispatch: &Dispatch, outcome: Outcome, log: Option<String>) -> Encoded {
    let mut result = StageResult {
        task_id: dispatch.task_id.clone(),
        job_id: dispatch.job_id.clone(),
        run_id: Some(dispatch.run_id.clone()),
        outputs: Value::Null,
        log: log.map(clip),
        error: None,
    };
    let mut unsendable = None;
    match outcome {
        Outcome::Outputs(outputs) => match check_outputs(&outputs) {
            None => result.outputs = outputs,
            Some(reason) => unsendable = Some(reason),
        },
        Outcome::Failed(error) => result.error = Some(clip(error)),
        Outcome::Unsendable(reason) => unsendable = Some(reason),
    }
    if let Some(reason) = &unsendable {
        result.error = Some(clip(reason.clone()));
    }
    let body = serialise(&result);
    if body.len() <= MAX_RESULT_BYTES {
        return Encoded { body, unsendable };
    }
    let reason = format!(
        "outputs cannot be sent: the result is {} bytes, more than the {MAX_RESULT_BYTES} bytes the coordinator accepts",
        body.len()
    );
    result.outputs = Value::Null;
    result.error = Some(reason.clone());
    Encoded {
        body: serialise(&result),
        unsendable: Some(reason),
    }
}

fn serialise(result: &StageResult) -> Vec<u8> {
    // A StageResult holds strings and a serde_json::Value, which always serialise.
    serde_json::to_vec(result).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoded(encoded: &Encoded) -> StageResult {
        serde_json::from_slice(&encoded.body).expect("a stage-result")
    }

    fn dispatch() -> Dispatch {
        serde_json::from_value(json!({
            "task_id": "t", "job_id": "j", "run_id": "r", "machine_id": "m", "pipeline_id": "p",
            "stage_id": "01", "worker": {"id": "w", "name": "W"}, "inputs": {}, "configs": {},
            "attempt": 1, "deadline": "2020-07-16T11:15:53.278087Z"
        }))
        .expect("a dispatch")
    }

    #[test]
    fn outputs_of_the_allowed_shapes_pass() {
        for outputs in [
            json!(null),
            json!({"a": 1}),
            json!([{"a": 1}, null]),
            json!([]),
        ] {
            assert_eq!(check_outputs(&outputs), None, "{outputs}");
        }
    }

    #[test]
    fn outputs_of_another_shape_are_refused_with_the_path() {
        assert_eq!(
            check_outputs(&json!(5)).as_deref(),
            Some(
                "outputs must be an object, a list of objects and nulls, or null, not a number (at $)"
            )
        );
        assert_eq!(
            check_outputs(&json!([{}, "x"])).as_deref(),
            Some(
                "outputs must be an object, a list of objects and nulls, or null, not a string (at $[1])"
            )
        );
    }

    #[test]
    fn integers_beyond_64_signed_bits_are_refused_with_the_path() {
        let outputs = json!([{"ok": i64::MAX, "nested": {"list": [1, u64::MAX]}}]);
        assert_eq!(
            check_outputs(&outputs).as_deref(),
            Some(
                "outputs cannot be sent as JSON: integer 18446744073709551615 is outside the signed 64-bit range (at $[0].nested.list[1])"
            )
        );
        assert_eq!(check_outputs(&json!({"n": i64::MIN})), None);
    }

    #[test]
    fn a_failure_is_an_error_result_with_null_outputs() {
        let outcome = Outcome::Failed("cannot parse".into());
        let encoded = encode_result(&dispatch(), outcome, None);
        let result = decoded(&encoded);
        assert_eq!(result.outputs, Value::Null);
        assert_eq!(result.error.as_deref(), Some("cannot parse"));
        assert_eq!(encoded.unsendable, None);
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_TEXT_BYTES);
        let cut = clip(text);
        assert!(cut.ends_with(" …[cut]"));
        assert!(cut.len() <= MAX_TEXT_BYTES + " …[cut]".len());
        assert_eq!(clip("short".into()), "short");
    }

    #[test]
    fn a_result_echoes_the_ids_and_carries_outputs_and_log() {
        let encoded = encode_result(
            &dispatch(),
            Outcome::Outputs(json!({"a": 1})),
            Some("done".into()),
        );
        assert_eq!(encoded.unsendable, None);
        let result = decoded(&encoded);
        assert_eq!(
            (result.task_id.as_str(), result.job_id.as_str()),
            ("t", "j")
        );
        assert_eq!(result.run_id.as_deref(), Some("r"));
        assert_eq!(result.outputs, json!({"a": 1}));
        assert_eq!(result.log.as_deref(), Some("done"));
        assert_eq!(result.error, None);
    }

    #[test]
    fn unsendable_outputs_become_an_error_result_that_keeps_the_log() {
        let outcome = Outcome::Outputs(json!({"n": u64::MAX}));
        let encoded = encode_result(&dispatch(), outcome, Some("log".into()));
        let result = decoded(&encoded);
        assert_eq!(result.outputs, Value::Null);
        assert!(
            result
                .error
                .as_deref()
                .is_some_and(|e| e.contains("(at $.n)"))
        );
        assert_eq!(result.error, encoded.unsendable);
        assert_eq!(result.log.as_deref(), Some("log"));
    }

    #[test]
    fn a_result_over_the_coordinators_limit_becomes_an_error_result() {
        let big = json!({"text": "x".repeat(MAX_RESULT_BYTES)});
        let encoded = encode_result(&dispatch(), Outcome::Outputs(big), None);
        assert!(encoded.body.len() < 1024);
        let result = decoded(&encoded);
        assert!(
            result
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("outputs cannot be sent: the result is 41943"))
        );
    }
}
