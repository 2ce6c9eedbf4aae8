//! Command-line interface: every flag of `celery-service`, each with its `CS_*` variable.
//!
//! Parsing happens in two stages (as ripgrep does): clap turns raw arguments into [`Cli`], and
//! [`RunArgs::settings`] turns those into a validated [`crate::app::Settings`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::Settings;
use crate::runner::tracking::TrackingChoice;
use crate::store::{Secret, StoreSettings};
use crate::supervisor::Limits;

/// Serves legacy scheduled scripts and built-in Rust tasks as HTTP endpoints for Celery beat.
#[derive(Debug, Parser)]
#[command(name = "celery-service", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every configured task over HTTP, reloading the task config when it changes.
    // Boxed because its flags make it much larger than the other variants.
    Run(Box<RunArgs>),
    /// Check the task config and print its routes; exits non-zero naming every error.
    Check(ConfigArgs),
    /// Print every route the task config would serve.
    List(ConfigArgs),
    /// Print or write the OpenAPI document the service would serve for the task config.
    Openapi(OpenapiArgs),
    /// Print the version.
    Version,
}

/// Where the task definitions come from; shared by every subcommand that reads them.
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// External task config file.
    #[arg(long, env = "CS_EXTERNAL_TASK", default_value = "external-tasks.yaml")]
    pub external_task_config: PathBuf,

    /// Folder holding the collected legacy scripts (`collected: true`).
    #[arg(long, env = "CS_COLLECT_DIR", default_value = "collect")]
    pub collect_dir: PathBuf,
}

/// Flags of `celery-service openapi`.
#[derive(Debug, Args, Clone)]
pub struct OpenapiArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Write the document to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Flags of `celery-service run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Print the service log to the console too (`--no-log-console` turns it off).
    #[arg(long, env = "CS_LOG_CONSOLE", overrides_with = "no_log_console")]
    pub log_console: bool,

    /// Do not print the service log to the console.
    #[arg(long, overrides_with = "log_console")]
    pub no_log_console: bool,

    /// Service listen address.
    #[arg(long, env = "CS_ADDRESS", default_value = "0.0.0.0:80")]
    pub address: String,

    /// Result database (MongoDB): `host:port` or a `mongodb://` URI; without it results go to
    /// the embedded store (`--result-db-file`).
    #[arg(long, env = "CS_DB_ADDRESS")]
    pub db_address: Option<String>,

    /// Result database user.
    #[arg(long, env = "CS_DB_USER")]
    pub db_user: Option<String>,

    /// Result database password.
    #[arg(long, env = "CS_DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,

    /// Result database name [default: celery_service].
    #[arg(long, env = "CS_DB_NAME")]
    pub db_name: Option<String>,

    /// Folder for the task logs and the service log.
    #[arg(long, env = "CS_LOG_DIR", default_value = "logs")]
    pub log_dir: PathBuf,

    /// How long a finished async session stays queryable (e.g. `90s`, `1h`).
    #[arg(long, env = "CS_SESSION_RETENTION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub session_retention: Duration,

    /// How long a killed task gets between SIGTERM and SIGKILL.
    #[arg(long, env = "CS_KILL_GRACE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub kill_grace: Duration,

    /// Rotate a log file when it passes this many bytes.
    #[arg(long, env = "CS_LOG_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub log_max_bytes: usize,

    /// How many rotated files to keep per log.
    #[arg(long, env = "CS_LOG_MAX_FILES", default_value_t = 5)]
    pub log_max_files: usize,

    /// How long the task config must stay unchanged after a write before it is reloaded.
    #[arg(long, env = "CS_RELOAD_DEBOUNCE", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub reload_debounce: Duration,

    /// Threads of the async runtime that serves requests and runs [default: one per core, at least 2].
    #[arg(long, env = "CS_WORKERS")]
    pub workers: Option<usize>,

    /// The embedded result store (SQLite) without `--db-address`; the spool with it.
    #[arg(long, env = "CS_RESULT_DB_FILE", default_value = "results.sqlite3")]
    pub result_db_file: PathBuf,

    /// Keep results in memory only, as the original service did (until --session-retention):
    /// no embedded file, no MongoDB, no `/results` history.
    #[arg(long, env = "CS_NO_RESULT_STORE", conflicts_with = "db_address")]
    pub no_result_store: bool,

    /// How long ended result records are kept (e.g. `30d`, `12h`).
    #[arg(long, env = "CS_RESULT_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub result_retention: Duration,

    /// A replica whose heartbeat is this old is taken for dead: its running records become `lost`.
    #[arg(long, env = "CS_REPLICA_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub replica_timeout: Duration,

    /// How every process of a run is found: a cgroup per run, or the subreaper fallback.
    #[arg(long, env = "CS_PROCESS_TRACKING", value_enum, default_value = "auto")]
    pub process_tracking: TrackingChoice,

    /// Time limit of a run whose task sets no `timeout` (e.g. `30m`) [default: none].
    #[arg(long, env = "CS_DEFAULT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub default_timeout: Option<Duration>,

    /// Most runs at once; past it new runs answer HTTP 429 [default: no limit].
    #[arg(long, env = "CS_MAX_RUNNING")]
    pub max_running: Option<usize>,

    /// How long an `Idempotency-Key` of `POST /async/...` answers with the session it started.
    #[arg(long, env = "CS_IDEMPOTENCY_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idempotency_window: Duration,

    /// On SIGTERM or SIGINT, how long active runs may go on before they are ended.
    #[arg(long, env = "CS_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Bearer tokens every task, session, reload and config route needs (comma-separated, so
    /// that one can be rotated); none leaves the service open.
    #[arg(long, env = "CS_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Vec<String>,

    /// File of bearer tokens, one a line (`#` comments), re-read when it changes.
    #[arg(long, env = "CS_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Read-only tokens (comma-separated): `/list`, `/discovery`, `/async/query`, the output.
    #[arg(long, env = "CS_READ_TOKEN", hide_env_values = true)]
    pub read_token: Vec<String>,

    /// Tokens that may read `/metrics` (comma-separated); none leaves `/metrics` open.
    #[arg(long, env = "CS_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Vec<String>,

    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "CS_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most arguments one request may post (400 beyond).
    #[arg(long, env = "CS_MAX_ARGS", default_value_t = 256)]
    pub max_args: usize,

    /// Longest posted argument in bytes (400 beyond).
    #[arg(long, env = "CS_MAX_ARG_BYTES", default_value_t = 64 * 1024)]
    pub max_arg_bytes: usize,

    /// Most connections held at once. Beyond it the connection idle longest is closed to make
    /// room; only when all are busy with requests is a new one answered 503 and closed
    /// [default: half the open-files limit left after 256 for the service's own files].
    #[arg(long, env = "CS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// How long a client may take to send a request's headers, from the accept for a new
    /// connection, before it is disconnected.
    #[arg(long, env = "CS_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// How long a connection may stay idle after a response before it is closed.
    #[arg(long, env = "CS_KEEP_ALIVE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub keep_alive_timeout: Duration,

    /// On SIGTERM or SIGINT, how long `/readyz` answers 503 (draining) while new runs are still
    /// started, so that a load balancer stops sending calls before any is refused (`0s`: refuse
    /// at once).
    #[arg(long, env = "CS_DRAIN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,

    /// Most async sessions held in memory, running or within retention (503 beyond).
    #[arg(long, env = "CS_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,

    /// Most output bytes one `/async/output` answer carries.
    #[arg(long, env = "CS_OUTPUT_MAX_BYTES", default_value_t = 256 * 1024)]
    pub output_max_bytes: usize,
}

impl RunArgs {
    /// Whether the service log also goes to stdout.
    pub fn console(&self) -> bool {
        self.log_console && !self.no_log_console
    }

    /// The validated settings `run` works with.
    pub fn settings(&self) -> Result<Settings, String> {
        if self.log_max_bytes == 0 {
            return Err("--log-max-bytes must be greater than 0".into());
        }
        if self.log_max_files == 0 {
            return Err("--log-max-files must be at least 1".into());
        }
        if self.workers == Some(0) {
            return Err("--workers must be at least 1".into());
        }
        if self.max_running == Some(0) {
            return Err("--max-running must be at least 1".into());
        }
        if self.default_timeout.is_some_and(|t| t.is_zero()) {
            return Err("--default-timeout must be longer than 0s".into());
        }
        for (flag, t) in [
            ("--header-read-timeout", self.header_read_timeout),
            ("--keep-alive-timeout", self.keep_alive_timeout),
        ] {
            if t.is_zero() {
                return Err(format!("{flag} must be longer than 0s"));
            }
        }
        let max_connections = self
            .max_connections
            .unwrap_or_else(crate::limits::max_connections_for_open_files);
        for (flag, v) in [
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-connections", max_connections),
            ("--max-sessions", self.max_sessions),
            ("--output-max-bytes", self.output_max_bytes),
        ] {
            if v == 0 {
                return Err(format!("{flag} must be greater than 0"));
            }
        }
        let auth = crate::auth::AuthSettings {
            tokens: nonempty(&self.auth_token),
            token_file: self.auth_token_file.clone(),
            read_tokens: nonempty(&self.read_token),
            metrics_tokens: nonempty(&self.metrics_token),
        };
        auth.validate().map_err(|e| e.to_string())?;
        Ok(Settings {
            config_path: self.config.external_task_config.clone(),
            collect_dir: self.config.collect_dir.clone(),
            log_dir: self.log_dir.clone(),
            session_retention: self.session_retention,
            kill_grace: self.kill_grace,
            log_max_bytes: self.log_max_bytes,
            log_max_files: self.log_max_files,
            reload_debounce: self.reload_debounce,
            workers: self.workers.unwrap_or_else(default_workers),
            process_tracking: self.process_tracking,
            limits: Limits {
                default_timeout: self.default_timeout,
                max_running: self.max_running,
                idempotency_window: self.idempotency_window,
                shutdown_timeout: self.shutdown_timeout,
            },
            auth,
            request_limits: crate::limits::Limits {
                max_body: self.max_body_bytes,
                max_args: self.max_args,
                max_arg_bytes: self.max_arg_bytes,
                max_connections,
                header_read_timeout: self.header_read_timeout,
                keep_alive_timeout: self.keep_alive_timeout,
                max_sessions: self.max_sessions,
                output_max_bytes: self.output_max_bytes,
            },
            store: self.store_settings()?,
            drain_delay: self.drain_delay,
        })
    }

    /// Where result records go.
    fn store_settings(&self) -> Result<StoreSettings, String> {
        if self.replica_timeout < Duration::from_secs(2) {
            return Err(
                "--replica-timeout must be at least 2s (heartbeats come four times per timeout, at most every 0.5s)".into(),
            );
        }
        let address = self.db_address.clone().filter(|a| !a.trim().is_empty());
        Ok(StoreSettings {
            password: Secret::of(self.db_password.clone(), address.as_deref()),
            address,
            user: self.db_user.clone().filter(|u| !u.is_empty()),
            db_name: self
                .db_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "celery_service".into()),
            file: std::path::absolute(&self.result_db_file)
                .map_err(|e| format!("--result-db-file: {e}"))?,
            retention: self.result_retention,
            replica_timeout: self.replica_timeout,
            off: self.no_result_store,
        })
    }
}

/// The tokens of a comma-separated flag (given once or more), trimmed, empty ones dropped
/// (`a,,b` or a trailing comma).
fn nonempty(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// The default number of runtime worker threads: one per core, at least 2, so that one thread
/// held by a spawn (until the child has called exec) never leaves the service without one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_console_flag_pair_last_one_wins() {
        let cli = Cli::parse_from(["cs", "run", "--log-console", "--no-log-console"]);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert!(!args.console());
        let cli = Cli::parse_from(["cs", "run", "--no-log-console", "--log-console"]);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert!(args.console());
    }

    #[test]
    fn connection_timeouts_must_be_positive_and_the_limit_has_a_default() {
        let run = |extra: &[&str]| {
            let cli = Cli::parse_from(["cs", "run"].iter().chain(extra));
            let Command::Run(args) = cli.command else {
                panic!("not run")
            };
            args.settings()
        };
        for flag in ["--header-read-timeout", "--keep-alive-timeout"] {
            let e = run(&[flag, "0s"]).unwrap_err();
            assert_eq!(e, format!("{flag} must be longer than 0s"));
        }
        let s = run(&["--drain-delay", "0s"]).unwrap();
        assert!(s.drain_delay.is_zero());
        assert_eq!(
            s.request_limits.max_connections,
            crate::limits::max_connections_for_open_files()
        );
        assert_eq!(s.request_limits.keep_alive_timeout, Duration::from_secs(60));
    }

    #[test]
    fn durations_are_human() {
        let cli = Cli::parse_from(["cs", "run", "--session-retention", "90s"]);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.session_retention, Duration::from_secs(90));
    }
}
