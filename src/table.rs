//! The route table: every task the service answers for, keyed by its URL path, swapped whole.
//!
//! A table is built from one parsed config plus the built-in tasks and never changes afterwards.
//! [`Routes`] holds the current one behind an [`ArcSwap`], so a request loads one `Arc` and sees
//! one whole config for its whole life, while a reload stores a new table beside it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Local};

use serde_json::Value;

use crate::config::{self, segment, ConfigError, ConfigErrors, ExternalTask, Schedule};
use crate::runner::Invocation;
use crate::tasks::{self, DynTask};

/// What runs behind a route.
#[derive(Clone)]
pub enum TaskKind {
    /// A script or binary from the YAML.
    External {
        /// The task as configured (boxed: it is much larger than the other variant).
        task: Box<ExternalTask>,
        /// How to start it.
        invocation: Invocation,
    },
    /// A task written in Rust.
    Builtin(Arc<dyn DynTask>),
}

/// One routable task.
#[derive(Clone)]
pub struct Task {
    /// The task name as configured; names the log file.
    pub name: String,
    /// The cluster type as configured.
    pub cluster_type: String,
    /// `<cluster-type-segment>/<name-segment>`, the part after `/sync/` and `/async/`.
    pub path: String,
    /// Whether schedulers should schedule it; a disabled task is served all the same.
    pub enabled: bool,
    /// The body a scheduler posts on schedule.
    pub empty_param: Value,
    /// When a scheduler should run it, if its definition says.
    pub schedule: Option<Schedule>,
    /// What runs.
    pub kind: TaskKind,
}

impl Task {
    /// A short description for listings and documents.
    pub fn description(&self) -> String {
        match &self.kind {
            TaskKind::External { task, .. } => task.description.clone().unwrap_or_else(|| {
                format!(
                    "Runs `{}` ({}{})",
                    task.executable,
                    task.language.as_str(),
                    if task.collected { ", collected" } else { "" }
                )
            }),
            TaskKind::Builtin(t) => t.description().to_string(),
        }
    }
}

/// One immutable generation of routes.
pub struct RouteTable {
    /// Counts loads from 1; a rejected reload does not count.
    pub generation: u64,
    /// When this table was built.
    pub loaded_at: DateTime<Local>,
    /// SHA-less but stable checksum of the config text (FNV-1a 64, hex).
    pub checksum: String,
    /// Every task by path, sorted.
    pub tasks: BTreeMap<String, Arc<Task>>,
}

impl RouteTable {
    /// Builds a table from the config text, validating everything and collecting every error.
    pub fn build(
        config_text: &str,
        collect_dir: &Path,
        generation: u64,
    ) -> Result<Self, ConfigErrors> {
        let external = config::parse_tasks(config_text, collect_dir)?;
        let mut errors = Vec::new();
        let mut tasks = builtin_tasks(&mut errors);
        let mut owners: HashMap<String, (usize, String)> = HashMap::new();
        for (index, t) in external.into_iter().enumerate() {
            let path = format!("{}/{}", segment(&t.cluster_type), segment(&t.name));
            let task_ref = config::TaskRef {
                index,
                name: Some(t.name.clone()),
            };
            if let Some((other, other_name)) = owners.get(&path) {
                errors.push(ConfigError::field(
                    &task_ref,
                    "name",
                    format!(
                        "maps to /sync/{path}, which task #{} `{other_name}` already has",
                        other + 1
                    ),
                ));
                continue;
            }
            if tasks.contains_key(&path) {
                errors.push(ConfigError::field(
                    &task_ref,
                    "name",
                    format!("maps to /sync/{path}, which a built-in Rust task already has"),
                ));
                continue;
            }
            owners.insert(path.clone(), (index, t.name.clone()));
            let invocation = Invocation::new(&t, collect_dir);
            tasks.insert(
                path.clone(),
                Arc::new(Task {
                    name: t.name.clone(),
                    cluster_type: t.cluster_type.clone(),
                    path,
                    enabled: t.enable,
                    empty_param: Value::from(t.empty_param.clone()),
                    schedule: t.schedule.clone(),
                    kind: TaskKind::External {
                        task: Box::new(t),
                        invocation,
                    },
                }),
            );
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Self {
            generation,
            loaded_at: Local::now(),
            checksum: checksum(config_text.as_bytes()),
            tasks,
        })
    }

    /// The task at `<ct>/<name>`.
    pub fn get(&self, path: &str) -> Option<&Arc<Task>> {
        self.tasks.get(path)
    }
}

/// Every built-in task by path; a bad built-in schedule is added to `errors`.
fn builtin_tasks(errors: &mut Vec<ConfigError>) -> BTreeMap<String, Arc<Task>> {
    let mut tasks: BTreeMap<String, Arc<Task>> = BTreeMap::new();
    for builtin in tasks::registry() {
        let path = format!(
            "{}/{}",
            segment(builtin.cluster_type()),
            segment(builtin.name())
        );
        let schedule = match builtin.schedule().map(Schedule::from_line) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(problems)) => {
                errors.extend(problems.into_iter().map(|p| {
                    ConfigError::file(format!(
                        "built-in task `{}`: field `schedule`: {p}",
                        builtin.name()
                    ))
                }));
                None
            }
        };
        let task = Task {
            name: builtin.name().to_string(),
            cluster_type: builtin.cluster_type().to_string(),
            path: path.clone(),
            enabled: builtin.enabled(),
            empty_param: builtin.empty_param(),
            schedule,
            kind: TaskKind::Builtin(builtin),
        };
        tasks.insert(path, Arc::new(task));
    }
    tasks
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
    /// The process tracking `--process-tracking` asks for cannot be set up.
    #[error("--process-tracking: {0}")]
    Tracking(#[from] crate::runner::tracking::TrackingError),
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

/// FNV-1a, 64 bit: enough to tell two config texts apart in a status page.
pub fn checksum(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The current table, swapped atomically.
pub struct Routes {
    current: ArcSwap<RouteTable>,
}

impl Routes {
    /// Starts with `table`.
    pub fn new(table: RouteTable) -> Self {
        Self {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// The current table; hold it for the whole request.
    pub fn load(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    /// Replaces the table; requests already holding the old one keep it.
    pub fn store(&self, table: RouteTable) {
        self.current.store(Arc::new(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_kebab_case() {
        assert_eq!(segment("TendbCluster"), "tendb-cluster");
        assert_eq!(segment("TendbHA"), "tendb-ha");
        assert_eq!(segment("sqlsvr"), "sqlsvr");
        assert_eq!(segment("shell_echo"), "shell-echo");
        assert_eq!(segment("demo1"), "demo1");
    }

    #[test]
    fn duplicate_routes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "
- {name: shell_echo, cluster_type: TendbCluster, language: sh, executable: echo, collected: false}
- {name: shell-echo, cluster_type: tendb_cluster, language: sh, executable: echo, collected: false}
- {name: counter, cluster_type: TendbHA, language: sh, executable: echo, collected: false}
";
        let Err(e) = RouteTable::build(yaml, dir.path(), 1) else {
            panic!("duplicates accepted")
        };
        let text = e.to_string();
        assert!(text.contains("task #2 `shell-echo`: field `name`: maps to /sync/tendb-cluster/shell-echo, which task #1 `shell_echo` already has"), "{text}");
        assert!(text.contains("task #3 `counter`"), "{text}");
    }
}
