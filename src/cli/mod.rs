//! Operator commands that talk to a running service over its REST API. Everything printed
//! from the API goes through [`render`], which escapes control characters.

mod commands;
mod render;

pub use render::{escape, pretty_json, render_job};

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the API is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the REST API.
    #[arg(
        long,
        env = "JOB_MANAGER_API_URL",
        default_value = "http://127.0.0.1:8000/job-manager",
        global = true
    )]
    pub api_url: String,
    /// Bearer token, when access control is on.
    #[arg(
        long,
        env = "JOB_MANAGER_API_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

/// Filters of `jobs` and `history`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Comma-separated statuses.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this machine's jobs.
    #[arg(long)]
    pub machine: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// `job-manager pipelines …`.
#[derive(Debug, Clone, Subcommand)]
pub enum PipelinesCommand {
    /// Register or replace a pipeline from a JSON or YAML file (PUT when it has an `id`).
    Apply { file: PathBuf },
    /// List pipeline ids.
    List,
}

/// `job-manager machines …`.
#[derive(Debug, Clone, Subcommand)]
pub enum MachinesCommand {
    /// Point a machine at a pipeline.
    Set {
        machine_id: String,
        #[arg(long)]
        pipeline: String,
        /// Configs for every task of the machine's jobs, as a JSON object.
        #[arg(long)]
        configs: Option<String>,
    },
    /// Show a machine.
    Show { machine_id: String },
}

/// The operator commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// List active jobs.
    Jobs(ListArgs),
    /// Show one job stage by stage; `--watch` follows it until it ends.
    Job {
        id: String,
        #[arg(long)]
        watch: bool,
    },
    /// Abort a job and wait until it is in history.
    Abort { id: String },
    /// Pause a job: it dispatches nothing new until it is resumed.
    Pause { id: String },
    /// Resume a paused or held job: queued tasks are dispatched, and held tasks get a fresh
    /// attempt.
    Resume { id: String },
    /// Run an ended job's file again from a stage, reusing the latest run's earlier stages.
    Rerun {
        id: String,
        /// The stage to start from, e.g. `03`.
        #[arg(long)]
        from: String,
        /// Run the machine's current pipeline instead of the earlier run's snapshot.
        #[arg(long)]
        current_pipeline: bool,
    },
    /// Skip a held task: record it with these outputs (a JSON list of objects, or one object).
    Skip {
        id: String,
        task_id: String,
        #[arg(long, default_value = "[]")]
        outputs: String,
    },
    /// List ended jobs.
    History(ListArgs),
    /// Register, replace and list pipelines.
    #[command(subcommand)]
    Pipelines(PipelinesCommand),
    /// Point machines at pipelines.
    #[command(subcommand)]
    Machines(MachinesCommand),
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(api: &ApiArgs) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: api.api_url.trim_end_matches('/').to_owned(),
            token: api.token.clone(),
        })
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the API's message.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{status}: {}", escape(&message));
        }
        Ok((status, value))
    }

    /// Opens a stream: no overall timeout (it lasts as long as the job), a non-2xx answer is an
    /// error with the API's message.
    async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            let message = value["error"]["message"].as_str().unwrap_or("?");
            bail!("{status}: {}", escape(message));
        }
        Ok(response)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(reqwest::Method::GET, path, None).await?.1)
    }

    /// The job from `/jobs`, or from `/history` once it ended.
    async fn job(&self, id: &str) -> anyhow::Result<(Value, bool)> {
        match self.get(&format!("/jobs/{}", segment(id))).await {
            Ok(job) => Ok((job, false)),
            Err(error) if error.to_string().starts_with("404") => {
                Ok((self.get(&format!("/history/{}", segment(id))).await?, true))
            }
            Err(error) => Err(error),
        }
    }
}

/// `text` as one path segment: every byte but `A-Z a-z 0-9 - . _ ~` percent-encoded, so an id
/// holding `/`, `?` or `#` cannot address another route.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn list_query(args: &ListArgs) -> String {
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(status) = &args.status {
        query.push(("status", status.clone()));
    }
    if let Some(machine) = &args.machine {
        query.push(("machine_id", machine.clone()));
    }
    serde_urlencoded::to_string(query).unwrap_or_default()
}

async fn print_list(client: &Client, listing: &str, args: &ListArgs) -> anyhow::Result<()> {
    let ids = client
        .get(&format!("/{listing}?{}", list_query(args)))
        .await?;
    println!(
        "{:<24} {:<9} {:<34} {:<6} created",
        "job", "status", "machine", "stage"
    );
    for id in ids
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let Ok(job) = client.get(&format!("/{listing}/{}", segment(id))).await else {
            continue;
        };
        let stage = job["current_stage"]["id"]
            .as_str()
            .or_else(|| {
                job["stages"]
                    .as_array()
                    .and_then(|s| s.last())
                    .and_then(|s| s["id"].as_str())
            })
            .unwrap_or("");
        let field = |name: &str| escape(job[name].as_str().unwrap_or(""));
        println!(
            "{:<24} {:<9} {:<34} {:<6} {}",
            escape(id),
            field("status"),
            field("machine_id"),
            escape(stage),
            field("created")
        );
    }
    Ok(())
}

/// Reads a pipeline body from JSON or YAML.
pub fn read_pipeline(file: &std::path::Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if yaml {
        serde_norway::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", file.display()))
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))
    }
}

/// Runs an operator command.
pub async fn run(api: ApiArgs, command: Command) -> anyhow::Result<()> {
    let client = Client::new(&api)?;
    match command {
        Command::Jobs(args) => print_list(&client, "jobs", &args).await,
        Command::History(args) => print_list(&client, "history", &args).await,
        Command::Job { id, watch } => commands::show_job(&client, &id, watch).await,
        Command::Abort { id } => commands::abort(&client, &id).await,
        Command::Pause { id } => commands::set_status(&client, &id, "paused").await,
        Command::Resume { id } => commands::set_status(&client, &id, "running").await,
        Command::Rerun {
            id,
            from,
            current_pipeline,
        } => commands::rerun(&client, &id, &from, current_pipeline).await,
        Command::Skip {
            id,
            task_id,
            outputs,
        } => commands::skip(&client, &id, &task_id, &outputs).await,
        Command::Pipelines(PipelinesCommand::List) => commands::list_pipelines(&client).await,
        Command::Pipelines(PipelinesCommand::Apply { file }) => {
            commands::apply_pipeline(&client, &file).await
        }
        Command::Machines(MachinesCommand::Set {
            machine_id,
            pipeline,
            configs,
        }) => commands::set_machine(&client, &machine_id, &pipeline, configs.as_deref()).await,
        Command::Machines(MachinesCommand::Show { machine_id }) => {
            commands::show_machine(&client, &machine_id).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sent_as_one_path_segment() {
        assert_eq!(segment("UVpxMTeqgMijLlbmNI8A_A"), "UVpxMTeqgMijLlbmNI8A_A");
        assert_eq!(segment("a/../b?c#d"), "a%2F..%2Fb%3Fc%23d");
        assert_eq!(segment("é "), "%C3%A9%20");
    }

    #[test]
    fn pipelines_read_from_yaml_and_json() {
        let dir = std::env::temp_dir().join(format!("jm-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let yaml = dir.join("p.yaml");
        std::fs::write(&yaml, "name: x\nstages:\n  - worker: {id: w}\n").expect("write");
        assert_eq!(
            read_pipeline(&yaml).expect("yaml")["stages"][0]["worker"]["id"],
            "w"
        );
        let json = dir.join("p.json");
        std::fs::write(&json, "{\"name\": \"x\"}").expect("write");
        assert_eq!(read_pipeline(&json).expect("json")["name"], "x");
        std::fs::write(&json, "name: x").expect("write");
        assert!(read_pipeline(&json).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
