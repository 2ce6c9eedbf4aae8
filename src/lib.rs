//! celery-service: serves a DBA team's legacy scheduled scripts and built-in Rust tasks as HTTP
//! endpoints that a Celery beat schedule calls.
//!
//! Modules, each owning one concern:
//! - [`cli`]: the command line, every flag with its `CS_*` variable.
//! - [`config`]: the external task YAML, validated with every error reported at once.
//! - [`table`]: the route table built from a config plus the built-in tasks, swapped atomically.
//! - [`runner`]: argv building and child processes (the only module with pids and signals).
//! - [`sessions`]: async sessions, kill and retention.
//! - [`tasks`]: tasks written in Rust and their registry.
//! - [`logs`]: per-task and service log files with size rotation.
//! - [`reload`]: the one reload path (file change, SIGHUP, `POST /-/reload`) and its status.
//! - [`app`]: the shared state and the operations the HTTP layer calls.
//! - [`api`]: HTTP endpoints and the `{code, data, msg}` envelope.
//! - [`server`]: the accept loop, one hyper connection task per client, and shutdown.
//!
//! [`App::load`] validates a config and [`serve`] runs the service on a listener until a
//! shutdown future resolves, so tests start the real server on `127.0.0.1:0`.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod logs;
pub mod reload;
pub mod runner;
pub mod server;
pub mod sessions;
pub mod table;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

pub use app::App;
pub use config::ConfigErrors;
pub use server::serve;

use crate::logs::{Rotation, TaskLogs};
use crate::reload::Reloader;
use crate::sessions::SessionStore;
use crate::table::{RouteTable, Routes};

/// Validated settings of `celery-service run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The external task YAML.
    pub config_path: PathBuf,
    /// Where collected executables live.
    pub collect_dir: PathBuf,
    /// Where log files go.
    pub log_dir: PathBuf,
    /// How long finished sessions stay queryable.
    pub session_retention: Duration,
    /// Time between SIGTERM and SIGKILL when a run is killed.
    pub kill_grace: Duration,
    /// Rotate a log file past this size.
    pub log_max_bytes: usize,
    /// Rotated files kept per log.
    pub log_max_files: usize,
    /// How long the config file must be quiet after a change before it is reloaded.
    pub reload_debounce: Duration,
    /// How many threads the async runtime has.
    pub workers: usize,
}

impl Settings {
    /// The rotation limits for every log file.
    pub fn rotation(&self) -> Rotation {
        Rotation {
            max_bytes: self.log_max_bytes,
            max_files: self.log_max_files,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid.
    #[error("{path}: {errors}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// Every problem found.
        errors: ConfigErrors,
    },
    /// A file or folder could not be used.
    #[error("{what} `{}`: {source}", path.display())]
    Io {
        /// What we tried to do.
        what: &'static str,
        /// With which path.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Reads and validates the config at `path` into a route table.
pub fn load_table(
    path: &Path,
    collect_dir: &Path,
    generation: u64,
) -> Result<RouteTable, StartError> {
    build_table(path, &read_config(path)?, collect_dir, generation)
}

/// Reads the config text at `path`.
pub fn read_config(path: &Path) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(|source| StartError::Io {
        what: "cannot read the task config",
        path: path.to_path_buf(),
        source,
    })
}

/// Validates the config `text` read from `path` into a route table, with every error found.
pub fn build_table(
    path: &Path,
    text: &str,
    collect_dir: &Path,
    generation: u64,
) -> Result<RouteTable, StartError> {
    RouteTable::build(text, collect_dir, generation).map_err(|errors| StartError::Config {
        path: path.to_path_buf(),
        errors,
    })
}

/// Makes `dir` absolute (without resolving links), so child processes find scripts wherever
/// their working directory is.
pub fn absolute_dir(dir: &Path) -> Result<PathBuf, StartError> {
    std::path::absolute(dir).map_err(|source| StartError::Io {
        what: "cannot resolve",
        path: dir.to_path_buf(),
        source,
    })
}

impl App {
    /// Validates the config and prepares everything the service needs, before anything listens.
    pub fn load(settings: Settings) -> Result<Arc<Self>, StartError> {
        let collect_dir = absolute_dir(&settings.collect_dir)?;
        let table = load_table(&settings.config_path, &collect_dir, 1)?;
        std::fs::create_dir_all(&settings.log_dir).map_err(|source| StartError::Io {
            what: "cannot create the log folder",
            path: settings.log_dir.clone(),
            source,
        })?;
        Ok(Arc::new(Self {
            routes: Routes::new(table),
            sessions: SessionStore::new(settings.session_retention),
            logs: TaskLogs::new(settings.log_dir.clone(), settings.rotation()),
            collect_dir,
            settings,
            tracker: TaskTracker::new(),
            reloader: Reloader::default(),
        }))
    }
}
