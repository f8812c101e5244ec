//! Who may do what over the REST API: the configured bearer tokens, their roles, and what a
//! role may see (README.md, "Access control"; docs/protocol.md, "REST surface"). Plain data and
//! rules, no HTTP: `config` parses the tokens, `http::auth` enforces them on requests, and the
//! handlers and the schemas hide task ids from `read` callers with the same rule.

use serde_json::Value;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Role, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

/// Shortest token accepted, so a typo cannot configure a guessable one.
pub const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Parses `role:token` entries separated by commas or newlines; `#` starts a comment line.
    /// A line may also read `role token`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (number, entry) in text
            .split([',', '\n'])
            .map(str::trim)
            .enumerate()
            .filter(|(_, e)| !e.is_empty() && !e.starts_with('#'))
        {
            let (role, token) = entry
                .split_once(':')
                .or_else(|| entry.split_once(char::is_whitespace))
                .ok_or_else(|| format!("token entry {} is not 'role:token'", number + 1))?;
            let role = match role.trim() {
                "read" => Role::Read,
                "write" => Role::Write,
                other => return Err(format!("unknown role '{other}' (use read or write)")),
            };
            let token = token.trim();
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "a {role:?} token is shorter than {MIN_TOKEN_LEN} characters"
                ));
            }
            entries.push((role, token.as_bytes().to_vec()));
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `presented`, checking every configured token in constant time each.
    pub fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let mut found = None;
        for (role, token) in &self.entries {
            if constant_time_eq(token, presented) {
                found = found.max(Some(*role));
            }
        }
        found
    }
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    std::hint::black_box(difference) == 0
}

/// Whether a caller may see task ids. Holding one is what posting a result takes, so with
/// access control on, a `read` caller sees jobs without them; with it off, everyone may.
pub fn may_see_task_ids(role: Option<Role>) -> bool {
    role.is_none_or(|role| role >= Role::Write)
}

/// Removes `task_id` and `previous_ids` from every task of a job view (or a history view and
/// its `previous_runs`) serialised as JSON.
pub fn hide_task_ids(view: &mut Value) {
    let Some(view) = view.as_object_mut() else {
        return;
    };
    let mut stages: Vec<&mut Value> = Vec::new();
    let mut runs: Vec<&mut Value> = Vec::new();
    for (key, value) in view.iter_mut() {
        match (key.as_str(), value) {
            ("stages", Value::Array(list)) => stages.extend(list.iter_mut()),
            ("current_stage", stage) => stages.push(stage),
            ("previous_runs", Value::Array(list)) => runs.extend(list.iter_mut()),
            _ => {}
        }
    }
    for stage in stages {
        let tasks = stage.get_mut("tasks").and_then(Value::as_array_mut);
        for task in tasks.into_iter().flatten() {
            if let Some(task) = task.as_object_mut() {
                task.remove("task_id");
                task.remove("previous_ids");
            }
        }
    }
    for run in runs {
        hide_task_ids(run);
    }
}

/// The schema side of [`hide_task_ids`]: a job's tasks are shown without `task_id` to
/// `read` callers, so the response schemas do not require it. `definitions` is a `$defs` or
/// `components/schemas` map.
pub fn hideable_task_ids(definitions: &mut Value) {
    let Some(record) = definitions.get_mut("TaskRecord") else {
        return;
    };
    if let Some(required) = record.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|name| name != "task_id");
    }
    if let Some(description) = record.pointer_mut("/properties/task_id/description") {
        *description = Value::String(
            "The id of the current attempt; absent for callers with only the read role when \
             access control is on."
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tokens_parse_from_list_and_file_forms() {
        let tokens = Tokens::parse("read:aaaaaaaaaaaaaaaa,write:bbbbbbbbbbbbbbbb").expect("valid");
        assert_eq!(tokens.role_of(b"aaaaaaaaaaaaaaaa"), Some(Role::Read));
        assert_eq!(tokens.role_of(b"bbbbbbbbbbbbbbbb"), Some(Role::Write));
        assert_eq!(tokens.role_of(b"aaaaaaaaaaaaaaab"), None);
        assert_eq!(tokens.role_of(b""), None);
        let file = "# operators\nwrite cccccccccccccccc\n\nread:dddddddddddddddd\n";
        let tokens = Tokens::parse(file).expect("valid");
        assert_eq!(tokens.role_of(b"cccccccccccccccc"), Some(Role::Write));
    }

    #[test]
    fn bad_token_lists_are_refused() {
        assert!(Tokens::parse("admin:aaaaaaaaaaaaaaaa").is_err());
        assert!(Tokens::parse("read:short").is_err());
        assert!(Tokens::parse("nocolon").is_err());
        assert!(Tokens::parse("").is_ok_and(|t| t.is_empty()));
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let tokens = Tokens::parse("write:s3crets3crets3cret").expect("valid");
        let printed = format!("{tokens:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert_eq!(printed, "Tokens(1 configured)");
    }

    #[test]
    fn read_callers_see_jobs_without_task_ids() {
        assert!(may_see_task_ids(None));
        assert!(may_see_task_ids(Some(Role::Write)));
        assert!(!may_see_task_ids(Some(Role::Read)));
        let task = json!({"task_id": "t", "previous_ids": ["p"], "status": "pending"});
        let mut view = json!({"stages": [{"id": "01", "tasks": [task.clone()]}],
            "current_stage": {"id": "02", "tasks": [task.clone()]},
            "previous_runs": [{"stages": [{"id": "01", "tasks": [task]}]}]});
        hide_task_ids(&mut view);
        let mut bare = json!({"stages": [{"id": "init", "outputs": []}]});
        hide_task_ids(&mut bare);
        assert_eq!(
            bare,
            json!({"stages": [{"id": "init", "outputs": []}]}),
            "nothing added"
        );
        let text = view.to_string();
        assert!(
            !text.contains("task_id") && !text.contains("previous_ids"),
            "{text}"
        );
        assert_eq!(view["current_stage"]["tasks"][0]["status"], "pending");
    }

    #[test]
    fn the_task_record_schema_does_not_require_a_task_id() {
        let mut definitions = json!({"TaskRecord": {
            "required": ["task_id", "status"],
            "properties": {"task_id": {"description": "the id"}}}});
        hideable_task_ids(&mut definitions);
        assert_eq!(definitions["TaskRecord"]["required"], json!(["status"]));
        let description = &definitions["TaskRecord"]["properties"]["task_id"]["description"];
        assert!(
            description
                .as_str()
                .is_some_and(|d| d.contains("read role"))
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
