//! What the command line prints from the API, made safe for a terminal.
//!
//! Every text that comes from the API (ids, file names, errors, logs) may hold bytes a
//! terminal acts on: ESC starts a control sequence that can retitle the window, rewrite what
//! is shown or, on some terminals, answer back into the input. So every control character (C0,
//! DEL, C1) and every bidirectional override is printed as a visible escape (`\u{1b}`, `\n`),
//! and nothing from the API reaches the terminal raw.

use serde_json::Value;

/// Whether `c` is printed as an escape: C0 and DEL, C1, and the bidirectional controls that
/// reorder what is shown.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character escaped, on one line.
pub fn escape(text: &str) -> String {
    escape_with(text, false)
}

fn escape_with(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value pretty-printed for a terminal. serde_json already escapes C0 inside strings;
/// DEL, C1 and bidirectional controls are escaped here as `\u00XX` / `\uXXXX`, so the output
/// stays valid JSON.
pub fn pretty_json(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c != '\n' && is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A string field of an API answer, escaped; `?` when absent.
pub fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| "?".to_owned(), escape)
}

fn seconds(from: &Value, to: &Value) -> String {
    match (
        from.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        to.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
    ) {
        (Some(from), Some(to)) => {
            format!("{:.2} s", (to - from).num_milliseconds() as f64 / 1000.0)
        }
        _ => String::new(),
    }
}

/// The stage-by-stage view of a job record.
pub fn render_job(job: &Value) -> String {
    let mut out = format!(
        "job {}  {}\n  machine {}  pipeline {}\n  file {}  created {}\n",
        text(&job["id"]),
        text(&job["status"]),
        text(&job["machine_id"]),
        text(&job["pipeline_id"]),
        text(&job["file_name"]),
        text(&job["created"]),
    );
    let mut line = |stage: &Value, state: &str| {
        let tasks = stage["tasks"].as_array().map_or(0, Vec::len);
        let count = |status: &str| {
            stage["tasks"]
                .as_array()
                .map_or(0, |t| t.iter().filter(|t| t["status"] == status).count())
        };
        let retries: u64 = stage["tasks"].as_array().map_or(0, |t| {
            t.iter()
                .map(|t| t["attempt"].as_u64().unwrap_or(1).saturating_sub(1))
                .sum()
        });
        out.push_str(&format!(
            "  {:<5} {:<8} {:>3} task(s) {:>3} pending {:>3} queued {:>3} retries {:>4} output(s) {}\n",
            text(&stage["id"]),
            state,
            tasks,
            count("pending"),
            count("queued"),
            retries,
            stage["outputs"].as_array().map_or(0, Vec::len),
            seconds(&stage["started"], &stage["completed"]),
        ));
        if let Some(error) = stage["error"].as_str() {
            out.push_str(&format!("        error: {}\n", escape(error)));
        }
    };
    for stage in job["stages"].as_array().into_iter().flatten() {
        let state = if stage["error"].is_string() {
            "failed"
        } else if stage["reused_from"].is_string() {
            "reused"
        } else {
            "done"
        };
        line(stage, state);
    }
    if job["current_stage"].is_object() {
        let state = job["status"]
            .as_str()
            .filter(|s| matches!(*s, "paused" | "held"))
            .unwrap_or("running");
        line(&job["current_stage"], state);
        // What an operator needs to release a hold: the task ids to skip or retry.
        let tasks = job["current_stage"]["tasks"]
            .as_array()
            .into_iter()
            .flatten();
        for task in tasks.filter(|t| t["status"] == "failed") {
            out.push_str(&format!(
                "        held task {}: {}\n",
                text(&task["task_id"]),
                text(&task["error"])
            ));
        }
    }
    if let Some(error) = job["error"].as_str() {
        out.push_str(&format!("  error: {}\n", escape(error)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_job_view_lists_every_stage_in_order() {
        let job = json!({"id": "j", "status": "running", "machine_id": "m", "pipeline_id": "p", "file_name": "f",
            "created": "2020-07-16T10:15:53.278087Z",
            "stages": [{"id": "init", "outputs": [{"init_source": "f"}]},
                       {"id": "01", "outputs": [{}], "tasks": [{"status": "done", "attempt": 2}],
                        "started": "2020-07-16T10:15:53.000000Z", "completed": "2020-07-16T10:15:54.500000Z"}],
            "current_stage": {"id": "02", "outputs": [], "tasks": [{"status": "pending", "attempt": 1}]}});
        let view = render_job(&job);
        let lines: Vec<&str> = view.lines().collect();
        assert!(lines[0].starts_with("job j  running"));
        assert!(lines[3].contains("init") && lines[3].contains("done"));
        assert!(
            lines[4].contains("01")
                && lines[4].contains("1 retries")
                && lines[4].contains("1.50 s"),
            "{}",
            lines[4]
        );
        assert!(
            lines[5].contains("02")
                && lines[5].contains("running")
                && lines[5].contains("1 pending")
        );
    }

    #[test]
    fn a_held_job_shows_its_queued_tasks_and_the_held_ones_by_id() {
        let job = json!({"id": "j", "status": "held", "stages": [],
            "current_stage": {"id": "01", "outputs": [], "tasks": [
                {"task_id": "aa", "status": "failed", "attempt": 3, "error": "worker error: \u{1b}[2Jboom"},
                {"task_id": "bb", "status": "queued", "attempt": 2},
                {"task_id": "cc", "status": "done", "attempt": 1}]}});
        let view = render_job(&job);
        let stage = view.lines().find(|l| l.contains("01")).expect("the stage");
        assert!(
            stage.contains("held") && stage.contains("0 pending") && stage.contains("1 queued"),
            "{stage}"
        );
        assert!(
            view.contains("held task aa: worker error: \\u{1b}[2Jboom"),
            "{view}"
        );
        assert!(!view.contains("held task bb") && !view.contains("held task cc"));
    }

    #[test]
    fn a_stage_a_rerun_reused_says_so() {
        let job = json!({"id": "j", "status": "running", "stages": [
            {"id": "init", "outputs": [{}]},
            {"id": "01", "outputs": [{}], "reused_from": "run-1"}]});
        let view = render_job(&job);
        let stage = view.lines().find(|l| l.contains("01")).expect("the stage");
        assert!(stage.contains("reused"), "{stage}");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain név.csv"), "plain név.csv");
        assert_eq!(escape("a\u{1b}]0;pwned\u{7}b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(escape("x\u{9b}31m\u{7f}"), "x\\u{9b}31m\\u{7f}");
        assert_eq!(escape("l1\nl2\r\t\0"), "l1\\nl2\\r\\t\\u{0}");
        assert_eq!(escape("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let c = char::from_u32(c).expect("a char");
            assert!(!escape(&c.to_string()).contains(c), "{c:?}");
        }
    }

    #[test]
    fn hostile_job_fields_reach_the_terminal_escaped() {
        let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}1m\nfake line\u{202e}";
        let job = json!({"id": evil, "status": evil, "machine_id": evil, "pipeline_id": evil,
            "file_name": evil, "created": evil, "error": evil,
            "stages": [{"id": evil, "outputs": [], "error": evil, "tasks": []}],
            "current_stage": {"id": evil, "outputs": [], "tasks": [{"status": "pending"}]}});
        let view = render_job(&job);
        assert!(!view.chars().any(|c| c != '\n' && is_unsafe(c)), "{view:?}");
        assert!(view.contains("\\u{1b}[2J"), "{view}");
        // Only the view's own line breaks: 3 header lines, 2 stages, 2 errors.
        assert_eq!(view.lines().count(), 7, "{view}");
        let shown = pretty_json(&json!({"configs": {"k": evil}}));
        assert!(
            !shown.chars().any(|c| c != '\n' && is_unsafe(c)),
            "{shown:?}"
        );
        let parsed: Value = serde_json::from_str(&shown).expect("still JSON");
        assert_eq!(parsed["configs"]["k"], evil);
    }
}
