//! Settings, from flags or `JOB_MANAGER_*` environment variables (DESIGN §5).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::http::auth::Tokens;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the broker and the database are; shared by every subcommand that talks to them.
#[derive(Debug, Clone, Args)]
pub struct Endpoints {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "JOB_MANAGER_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// MongoDB connection string.
    #[arg(
        long,
        env = "JOB_MANAGER_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017"
    )]
    pub mongodb_uri: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            mongodb_uri: "mongodb://127.0.0.1:27017".into(),
        }
    }
}

/// Everything `job-manager serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Where RabbitMQ and MongoDB are.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// MongoDB database name.
    #[arg(long, env = "JOB_MANAGER_DATABASE", default_value = "job_manager")]
    pub database: String,
    /// Prefix `P` of every exchange and queue name.
    #[arg(long, env = "JOB_MANAGER_PREFIX", default_value = "job-manager")]
    pub prefix: String,
    /// Address the REST API listens on.
    #[arg(long, env = "JOB_MANAGER_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Path prefix of every REST route.
    #[arg(long, env = "JOB_MANAGER_BASE_PATH", default_value = "/job-manager")]
    pub base_path: String,
    /// Results a replica holds unacknowledged at once.
    #[arg(long, env = "JOB_MANAGER_PREFETCH", default_value_t = 64)]
    pub prefetch: u16,
    /// Seconds between sweeps for overdue tasks, unpublished dispatches and unfinished archives.
    #[arg(long, env = "JOB_MANAGER_SWEEP_INTERVAL_S", default_value_t = 5)]
    pub sweep_interval_s: u64,
    /// Seconds a recorded dispatch may stay unconfirmed before the sweep publishes it again.
    #[arg(long, env = "JOB_MANAGER_DISPATCH_GRACE_S", default_value_t = 30)]
    pub dispatch_grace_s: u64,
    /// Log format.
    #[arg(long, env = "JOB_MANAGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint for span export, e.g. `http://127.0.0.1:4318/v1/traces`; needs a
    /// build with `--features otel`.
    #[arg(long, env = "JOB_MANAGER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// API tokens as `role:token` entries separated by commas (roles: read, write). Access
    /// control is off when neither this nor a tokens file is given.
    #[arg(long, env = "JOB_MANAGER_API_TOKENS", hide_env_values = true)]
    pub api_tokens: Option<String>,
    /// A file of API tokens, one `role:token` (or `role token`) a line; `#` comments.
    #[arg(long, env = "JOB_MANAGER_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
}

impl Config {
    /// The defaults, as if no flag or variable were given.
    pub fn defaults() -> Self {
        Self {
            endpoints: Endpoints::default(),
            database: "job_manager".into(),
            prefix: "job-manager".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            base_path: "/job-manager".into(),
            prefetch: 64,
            sweep_interval_s: 5,
            dispatch_grace_s: 30,
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            api_tokens: None,
            api_tokens_file: None,
        }
    }

    /// The configured API tokens; empty when access control is off.
    pub fn tokens(&self) -> Result<Tokens, String> {
        let mut text = self.api_tokens.clone().unwrap_or_default();
        if let Some(path) = &self.api_tokens_file {
            let file = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the API tokens file {}: {e}", path.display()))?;
            text.push('\n');
            text.push_str(&file);
        }
        Tokens::parse(&text)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(self.sweep_interval_s.max(1))
    }

    pub fn dispatch_grace(&self) -> Duration {
        Duration::from_secs(self.dispatch_grace_s)
    }
}
