//! The run-control settings from the command line, and how `GET /-/config` shows them.

use std::time::Duration;

use poem_openapi::Object;

use super::Supervisor;
use crate::runner::tracking::Tracking;

/// Run-control settings, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Timeout of a task that has none of its own.
    pub default_timeout: Option<Duration>,
    /// Most runs at once.
    pub max_running: Option<usize>,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
    /// How long shutdown waits for runs to finish before ending them.
    pub shutdown_timeout: Duration,
}

/// The run-control settings, as `GET /-/config` shows them.
#[derive(Debug, Clone, Object)]
pub struct RunControlConfig {
    /// How every process of a run is found: `cgroup` or `subreaper`.
    pub process_tracking: String,
    /// The same, in words, with where and why.
    pub process_tracking_detail: String,
    /// `--default-timeout` (e.g. `30m`); null when runs have no default limit.
    #[oai(nullable)]
    pub default_timeout: Option<String>,
    /// `--max-running`; null when unlimited.
    #[oai(nullable)]
    pub max_running: Option<u64>,
    /// `--idempotency-window`.
    pub idempotency_window: String,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: String,
}

impl Supervisor {
    /// The run-control settings as `GET /-/config` shows them.
    pub fn config(&self) -> RunControlConfig {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        let limits = &self.limits;
        RunControlConfig {
            process_tracking: self
                .tracking
                .as_ref()
                .map_or("process-group", |t| t.mechanism().as_str())
                .to_string(),
            process_tracking_detail: self
                .tracking
                .as_deref()
                .map_or_else(|| "process group only".to_string(), Tracking::describe),
            default_timeout: limits.default_timeout.map(human),
            max_running: limits.max_running.map(|n| n as u64),
            idempotency_window: human(limits.idempotency_window),
            shutdown_timeout: human(limits.shutdown_timeout),
        }
    }
}
