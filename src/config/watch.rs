//! Notices when the task config file changes on disk, however it changes.
//!
//! The watch is on the file's parent folder, not on the file: an editor's save-by-rename (`vim`,
//! `sed -i`) puts a new inode under the name, and a Kubernetes ConfigMap swaps a `..data`
//! symlink beside the file while the file itself (a symlink into `..data`) never changes. A watch
//! on the file would miss both. Only events for names that can change what the config path reads
//! count: the file name itself, and the first component of its symlink target when that target
//! is relative (the `..data` of a ConfigMap). Access events are ignored: reading the file on a
//! reload makes some, and counting them would reload again, forever. Events are debounced, so
//! one save (a truncate and several writes, or a rename pair) gives one call, after the writing
//! has stopped.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::{self, EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

/// A running watch; dropping it stops watching.
pub struct ConfigWatcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

/// Why the config file cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch `{}` for changes of `{}`: {source}", dir.display(), file.display())]
pub struct WatchError {
    /// The folder we tried to watch.
    pub dir: PathBuf,
    /// The config file.
    pub file: PathBuf,
    /// What went wrong.
    pub source: notify::Error,
}

/// Watches `config_path` and calls `on_change` (on the watcher's own thread) each time it may
/// read differently, once the changes have been quiet for `debounce`.
pub fn watch(
    config_path: &Path,
    debounce: Duration,
    on_change: impl Fn() + Send + 'static,
) -> Result<ConfigWatcher, WatchError> {
    let file = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let error = |source| WatchError {
        dir: dir.clone(),
        file: file.clone(),
        source,
    };
    let watched = file.clone();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let names = trigger_names(&watched);
            let relevant = events.iter().any(|e| {
                !matches!(e.kind, EventKind::Access(_))
                    && e.paths
                        .iter()
                        .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
            });
            if relevant {
                on_change();
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "the config watcher reported an error");
            }
        }
    };
    let mut debouncer = new_debouncer(debounce, None, handler).map_err(error)?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(error)?;
    Ok(ConfigWatcher {
        _debouncer: debouncer,
    })
}

/// The names in the config's folder whose change can change what the config path reads.
///
/// Read again on every batch of events, so a link that is re-pointed is followed.
fn trigger_names(file: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = file.file_name().map(OsString::from).into_iter().collect();
    if let Ok(target) = std::fs::read_link(file) {
        if let Some(Component::Normal(first)) = target.components().next() {
            names.push(first.to_os_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configmap_link_adds_its_data_folder() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2024_x")).unwrap();
        std::fs::write(d.join("..2024_x/tasks.yaml"), "[]").unwrap();
        std::os::unix::fs::symlink("..2024_x", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tasks.yaml", d.join("tasks.yaml")).unwrap();
        assert_eq!(
            trigger_names(&d.join("tasks.yaml")),
            vec![OsString::from("tasks.yaml"), OsString::from("..data")]
        );
    }

    #[test]
    fn a_plain_file_is_matched_by_its_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tasks.yaml");
        std::fs::write(&f, "[]").unwrap();
        assert_eq!(trigger_names(&f), vec![OsString::from("tasks.yaml")]);
    }
}
