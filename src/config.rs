//! Settings, from flags or `JOB_MANAGER_*` environment variables (docs/protocol.md, "Settings").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::access::Tokens;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the broker and the database are; shared by every subcommand that talks to them.
/// Both URLs may carry passwords: `--help` hides their values and `Debug` masks them.
#[derive(Clone, Args)]
pub struct Endpoints {
    /// RabbitMQ URL [default: amqp://guest:***@127.0.0.1:5672/%2f].
    #[arg(
        long,
        env = "JOB_MANAGER_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// MongoDB connection string.
    #[arg(
        long,
        env = "JOB_MANAGER_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    pub mongodb_uri: String,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("mongodb_uri", &redact_url(&self.mongodb_uri))
            .finish()
    }
}

/// `url` with the password of its userinfo replaced by `***`, for logs and messages. Errs on
/// the side of masking: the userinfo ends at the last `@` before any query, so a password
/// holding an unescaped `/` is masked too.
pub fn redact_url(url: &str) -> String {
    let start = match url.find("://") {
        Some(i) => i + 3,
        None => match url.find(':') {
            Some(i) => i + 1,
            None => return url.to_owned(),
        },
    };
    let end = url[start..]
        .find(['?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else {
        return url.to_owned();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[at..]),
        None => url.to_owned(),
    }
}

/// Checks a `--base-path` and returns it normalised: `""` for no prefix (`/`), otherwise
/// `/segment/…` without a trailing slash.
pub fn parse_base_path(text: &str) -> Result<String, String> {
    if text == "/" {
        return Ok(String::new());
    }
    let Some(inner) = text.strip_prefix('/') else {
        return Err(format!(
            "base path '{text}' must start with '/' (use '/' for no prefix)"
        ));
    };
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if text.len() > 200 {
        return Err("base path is longer than 200 bytes".into());
    }
    for segment in inner.split('/') {
        if segment.is_empty() {
            return Err(format!("base path '{text}' must not contain '//'"));
        }
        if segment == "." || segment == ".." {
            return Err(format!(
                "base path '{text}' must not contain '.' or '..' segments"
            ));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
        {
            return Err(format!(
                "base path '{}' holds {bad:?}; use only A-Z a-z 0-9 - _ . ~ and '/'",
                text.escape_debug()
            ));
        }
    }
    Ok(format!("/{inner}"))
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
    /// Path prefix of every REST route (`/` for none).
    #[arg(long, env = "JOB_MANAGER_BASE_PATH", default_value = "/job-manager", value_parser = parse_base_path)]
    pub base_path: String,
    /// Seconds a request may take to get its response head; also bounds reading a request's
    /// headers and any stall in writing a response.
    #[arg(long, env = "JOB_MANAGER_REQUEST_TIMEOUT_S", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_s: u64,
    /// Requests served at once (a streamed listing counts until its body ends); more get 503.
    #[arg(long, env = "JOB_MANAGER_MAX_REQUESTS", default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_requests: u32,
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
            request_timeout_s: 30,
            max_requests: 512,
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

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_urls_and_debug_output() {
        assert_eq!(
            redact_url("amqp://user:s3cret@rabbit:5672/jobs"),
            "amqp://user:***@rabbit:5672/jobs"
        );
        assert_eq!(
            redact_url("mongodb://u:p%40ss@a:1,b:2/?authSource=x"),
            "mongodb://u:***@a:1,b:2/?authSource=x"
        );
        assert_eq!(redact_url("amqp://a:b:c@h"), "amqp://a:***@h");
        assert_eq!(redact_url("mongodb://h:27017"), "mongodb://h:27017");
        assert_eq!(redact_url("amqp://user@h/"), "amqp://user@h/");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("amqp:u:s3cret@h"), "amqp:u:***@h");
        assert_eq!(redact_url("amqp://u:p/ss@h/v"), "amqp://u:***@h/v");
        assert_eq!(redact_url("mongodb://h:1/?x=a@b"), "mongodb://h:1/?x=a@b");
        let endpoints = Endpoints {
            amqp_url: "amqp://job-manager:s3cret@rabbit/jobs".into(),
            mongodb_uri: "mongodb://job-manager:t0psecret@mongo/".into(),
        };
        let config = Config {
            endpoints,
            ..Config::defaults()
        };
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("t0psecret"),
            "{printed}"
        );
        assert!(printed.contains("job-manager:***@rabbit"), "{printed}");
        assert!(!format!("{:?}", Config::defaults()).contains("guest:guest"));
    }

    #[test]
    fn base_paths_are_normalised() {
        assert_eq!(
            parse_base_path("/job-manager").as_deref(),
            Ok("/job-manager")
        );
        assert_eq!(
            parse_base_path("/job-manager/").as_deref(),
            Ok("/job-manager")
        );
        assert_eq!(parse_base_path("/a/b.c~d_e").as_deref(), Ok("/a/b.c~d_e"));
        assert_eq!(parse_base_path("/").as_deref(), Ok(""));
    }

    #[test]
    fn bad_base_paths_are_refused_with_a_reason() {
        for (bad, reason) in [
            ("job-manager", "must start with '/'"),
            ("", "must start with '/'"),
            ("//", "'//'"),
            ("/a//b", "'//'"),
            ("/a/../b", "'..'"),
            ("/..", "'..'"),
            ("/a/./b", "'.'"),
            ("/a b", "holds ' '"),
            ("/{job}", "holds '{'"),
            ("/a*", "holds '*'"),
            ("/a%2f", "holds '%'"),
            ("/é", "holds 'é'"),
        ] {
            let error = parse_base_path(bad).expect_err(bad);
            assert!(error.contains(reason), "{bad}: {error}");
        }
        assert!(parse_base_path(&format!("/{}", "a".repeat(250))).is_err());
    }
}
