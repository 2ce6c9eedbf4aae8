//! The one reload path. A change of the config file, SIGHUP and `POST /-/reload` all call
//! [`Reloader::reload`], which reads and validates the whole file with the startup rules and
//! swaps the new route table in whole, or keeps serving the last good one and records why not.
//!
//! Requests and sessions already running hold an `Arc` of the task they started with, so a swap
//! never changes them; the next request looks its task up in the new table.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Local};
use poem_openapi::Object;
use tokio::task::JoinHandle;

use crate::config::watch::{self, ConfigWatcher, WatchError};
use crate::table::{self, RouteTable, Routes, Task, TaskKind};
use crate::table::{build_table, read_config, StartError};

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The config file changed on disk.
    FileChange,
    /// The service received SIGHUP.
    Hangup,
    /// `POST /-/reload`.
    Request,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::FileChange => "file change",
            Self::Hangup => "SIGHUP",
            Self::Request => "POST /-/reload",
        }
    }
}

/// The loaded config, as `GET /-/config` shows it.
#[derive(Debug, Clone, Object)]
pub struct ConfigStatus {
    /// Counts successful loads from 1 (the startup load); a rejected reload does not count.
    pub generation: u64,
    /// When the served table was loaded (RFC 3339).
    pub loaded_at: String,
    /// Checksum of the served config text (FNV-1a 64, hex).
    pub checksum: String,
    /// Tasks in the served table, external and built-in.
    pub task_count: u64,
    /// The config file, as given on the command line.
    pub config_path: String,
    /// Why the newest version of the file was rejected; null once a reload succeeds.
    #[oai(nullable)]
    pub last_error: Option<ReloadFailure>,
    /// Run control settings (`GET /-/config` only): process tracking, timeouts, limits.
    #[oai(skip_serializing_if_is_none)]
    pub run_control: Option<Box<crate::supervisor::RunControlConfig>>,
}

/// A rejected reload.
#[derive(Debug, Clone, Object)]
pub struct ReloadFailure {
    /// Every error found, one per line.
    pub message: String,
    /// When the reload was rejected (RFC 3339).
    pub at: String,
}

/// A reload that was rejected; the previous table keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("reload rejected, still serving generation {kept}: {source}")]
pub struct ReloadError {
    /// The generation still served.
    pub kept: u64,
    /// Why the file was rejected.
    pub source: StartError,
}

/// The config's source: reloads it into the route table, one reload at a time, and remembers
/// the last rejected one.
pub struct Reloader {
    /// The table requests are served from, shared with [`crate::app::App`].
    routes: Arc<Routes>,
    /// The config file, as given on the command line.
    config_path: PathBuf,
    /// Where collected executables live (absolute).
    collect_dir: PathBuf,
    /// How long the file must be quiet after a change before it is reloaded.
    debounce: Duration,
    /// The last rejected reload, if the newest file was rejected. The lock also serializes
    /// reloads, so generations count up without gaps and two reloads never race a swap.
    last_error: Mutex<Option<(String, DateTime<Local>)>>,
}

impl Reloader {
    /// Reloads `config_path` into `routes` from now on.
    pub fn new(
        routes: Arc<Routes>,
        config_path: PathBuf,
        collect_dir: PathBuf,
        debounce: Duration,
    ) -> Self {
        Self {
            routes,
            config_path,
            collect_dir,
            debounce,
            last_error: Mutex::default(),
        }
    }

    /// Reads and validates the config file and swaps the new table in. On any error the served
    /// table stays, every error is logged and remembered for [`Reloader::status`].
    ///
    /// A file change whose text is the one already served skips the rebuild; an explicit
    /// request (SIGHUP, `POST /-/reload`) always validates again, since collected scripts may
    /// have changed under an unchanged file.
    pub fn reload(&self, trigger: Trigger) -> Result<ConfigStatus, ReloadError> {
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.routes.load();
        let path = &self.config_path;
        let built = read_config(path).and_then(|text| {
            if trigger == Trigger::FileChange
                && last_error.is_none()
                && table::checksum(text.as_bytes()) == current.checksum
            {
                tracing::debug!(
                    trigger = trigger.as_str(),
                    generation = current.generation,
                    "the config text is unchanged; keeping the served table"
                );
                return Ok(None);
            }
            build_table(path, &text, &self.collect_dir, current.generation + 1).map(Some)
        });
        match built {
            Ok(Some(table)) => {
                log_swap(&current, &table, trigger);
                self.routes.store(table);
                *last_error = None;
                crate::metrics::reloaded("ok");
            }
            Ok(None) => crate::metrics::reloaded("unchanged"),
            Err(source) => {
                log_rejection(&source, current.generation, trigger);
                crate::metrics::reloaded("rejected");
                *last_error = Some((source.to_string(), Local::now()));
                return Err(ReloadError {
                    kept: current.generation,
                    source,
                });
            }
        }
        drop(current);
        Ok(self.status_of(&last_error))
    }

    /// The served config and the last rejected reload.
    pub fn status(&self) -> ConfigStatus {
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.status_of(&last_error)
    }

    fn status_of(&self, last_error: &Option<(String, DateTime<Local>)>) -> ConfigStatus {
        let table = self.routes.load();
        ConfigStatus {
            generation: table.generation,
            loaded_at: table.loaded_at.to_rfc3339(),
            checksum: table.checksum.clone(),
            task_count: table.tasks.len() as u64,
            config_path: self.config_path.display().to_string(),
            last_error: last_error.as_ref().map(|(message, at)| ReloadFailure {
                message: message.clone(),
                at: at.to_rfc3339(),
            }),
            run_control: None,
        }
    }
}

/// Logs a successful swap with what it changed.
fn log_swap(old: &RouteTable, new: &RouteTable, trigger: Trigger) {
    let added = only_in(new, old);
    let removed = only_in(old, new);
    let changed: Vec<&str> = new
        .tasks
        .iter()
        .filter(|(p, t)| old.tasks.get(*p).is_some_and(|o| !same_definition(o, t)))
        .map(|(p, _)| p.as_str())
        .collect();
    tracing::info!(
        trigger = trigger.as_str(),
        generation = new.generation,
        tasks = new.tasks.len(),
        checksum = %new.checksum,
        ?added,
        ?removed,
        ?changed,
        "config reloaded: generation {}",
        new.generation
    );
}

/// The task paths of `a` that `b` does not have.
fn only_in<'a>(a: &'a RouteTable, b: &RouteTable) -> Vec<&'a str> {
    a.tasks
        .keys()
        .filter(|p| !b.tasks.contains_key(*p))
        .map(String::as_str)
        .collect()
}

fn same_definition(a: &Task, b: &Task) -> bool {
    a.enabled == b.enabled
        && match (&a.kind, &b.kind) {
            (TaskKind::External { task: x, .. }, TaskKind::External { task: y, .. }) => x == y,
            (TaskKind::Builtin(_), TaskKind::Builtin(_)) => true,
            _ => false,
        }
}

/// Logs every error of a rejected reload, each with its task and field.
fn log_rejection(error: &StartError, kept: u64, trigger: Trigger) {
    match error {
        StartError::Config { path, errors } => {
            for e in &errors.0 {
                tracing::error!(
                    trigger = trigger.as_str(),
                    config = %path.display(),
                    task_index = e.task.as_ref().map(|t| t.index + 1),
                    task = e.task.as_ref().and_then(|t| t.name.as_deref()),
                    field = e.field.as_deref(),
                    "config reload rejected: {e}"
                );
            }
        }
        StartError::Io { .. } | StartError::Tracking(_) => {
            tracing::error!(
                trigger = trigger.as_str(),
                "config reload rejected: {error}"
            );
        }
    }
    tracing::warn!(
        trigger = trigger.as_str(),
        generation = kept,
        "still serving generation {kept}; fix the config file and it is picked up again"
    );
}

/// [`Reloader::reload`] on tokio's blocking pool: reading the file and validating every task
/// (a stat per collected script) must not hold a thread that serves connections.
pub async fn reload_off_thread(
    reloader: &Arc<Reloader>,
    trigger: Trigger,
) -> Result<ConfigStatus, ReloadError> {
    let reloader = reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.reload(trigger)).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only when the runtime is shutting down: nobody waits for the answer any more.
        Err(_) => std::future::pending().await,
    }
}

/// Reloads the config if the file no longer holds the text that was loaded at startup.
///
/// Called once the watch is in place: a change made between the startup load and the start of
/// the watch raised no event, and would otherwise only be seen at the next change.
pub async fn catch_up(reloader: &Arc<Reloader>) {
    let served = reloader.routes.load().checksum.clone();
    // A file-change reload rebuilds only if the checksum of the text differs from the served one.
    match reload_off_thread(reloader, Trigger::FileChange).await {
        Ok(status) if status.checksum != served => {
            tracing::info!(
                generation = status.generation,
                "the config changed while the service started; reloaded it"
            );
        }
        // Unchanged, or rejected (logged, and shown by `/-/config`).
        Ok(_) | Err(_) => {}
    }
}

/// Reloads the config each time its file changes, until dropped.
pub struct ConfigWatch {
    _watcher: ConfigWatcher,
    task: JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the config file of `reloader`; must be called inside the tokio runtime.
pub fn watch_config(reloader: Arc<Reloader>) -> Result<ConfigWatch, WatchError> {
    // A `Notify` keeps at most one pending wake-up, so changes made during a reload coalesce
    // into one more reload instead of queueing.
    let changed = Arc::new(tokio::sync::Notify::new());
    let watcher = {
        let changed = changed.clone();
        watch::watch(&reloader.config_path, reloader.debounce, move || {
            changed.notify_one()
        })?
    };
    let task = tokio::spawn(async move {
        loop {
            changed.notified().await;
            // A rejection is logged and shown by `/-/config`; nothing more to do here.
            let _ = reload_off_thread(&reloader, Trigger::FileChange).await;
        }
    });
    Ok(ConfigWatch {
        _watcher: watcher,
        task,
    })
}
