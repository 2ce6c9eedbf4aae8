//! The validated settings of `celery-service run` (built from the command line by
//! [`crate::cli`]), and the folder helper startup uses with them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::logs::Rotation;
use crate::runner::tracking::TrackingChoice;
use crate::store::StoreSettings;
use crate::supervisor::Limits;
use crate::table::StartError;

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
    /// Where result records go.
    pub store: StoreSettings,
    /// How every process of a run is found (`--process-tracking`).
    pub process_tracking: TrackingChoice,
    /// Run control limits (`--default-timeout`, `--max-running`, …).
    pub limits: Limits,
    /// Bearer tokens (authentication is off when none is set).
    pub auth: crate::auth::AuthSettings,
    /// Request and resource limits.
    pub request_limits: crate::limits::Limits,
    /// How long after a shutdown signal `/readyz` fails while runs are still started
    /// (`--drain-delay`).
    pub drain_delay: Duration,
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

/// Makes `dir` absolute (without resolving links), so child processes find scripts wherever
/// their working directory is.
pub fn absolute_dir(dir: &Path) -> Result<PathBuf, StartError> {
    std::path::absolute(dir).map_err(|source| StartError::Io {
        what: "cannot resolve",
        path: dir.to_path_buf(),
        source,
    })
}
