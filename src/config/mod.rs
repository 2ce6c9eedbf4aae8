//! The external task YAML: its model, and validation that reports every error at once.
//!
//! Parsing is done in two stages. The YAML is first read as plain values, then every task is
//! checked field by field, so that one load can report a typo in task 3 and a missing script in
//! task 7 together, each error naming the task (index and name) and the field.
//!
//! - [`parse`]: reads the YAML into [`ExternalTask`]s, every field of every task checked.
//! - [`schedule`]: a task's schedule, in the dialect of Celery's `crontab`.
//! - [`watch`]: notices when the file changes on disk, so the service can reload it.

mod executable;
mod parse;
pub mod schedule;
pub mod watch;

use std::fmt;

pub use parse::parse_tasks;
pub use schedule::Schedule;

/// The URL segment for a cluster type or task name: its kebab case (`TendbHA` is `tendb-ha`).
pub fn segment(s: &str) -> String {
    heck::ToKebabCase::to_kebab_case(s)
}

/// How a task's executable is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `python <executable> <args…>`.
    Python,
    /// `python2 <executable> <args…>`.
    Python2,
    /// `python3 <executable> <args…>`.
    Python3,
    /// `perl <executable> <args…>`.
    Perl,
    /// `sh -c '<executable> <args…> <quoted posted args…>'`; `shell` is an alias.
    Sh,
    /// `bash <executable> <args…>`.
    Bash,
    /// `<executable> <args…>`, executed directly.
    Binary,
}

impl Language {
    /// Every accepted spelling, as shown in errors and docs.
    pub const NAMES: &'static str = "python, python2, python3, perl, sh, shell, bash, binary";

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "python" => Self::Python,
            "python2" => Self::Python2,
            "python3" => Self::Python3,
            "perl" => Self::Perl,
            "sh" | "shell" => Self::Sh,
            "bash" => Self::Bash,
            "binary" => Self::Binary,
            _ => return None,
        })
    }

    /// The interpreter that runs the executable, if there is one.
    pub fn interpreter(self) -> Option<&'static str> {
        match self {
            Self::Python => Some("python"),
            Self::Python2 => Some("python2"),
            Self::Python3 => Some("python3"),
            Self::Perl => Some("perl"),
            Self::Bash => Some("bash"),
            Self::Sh | Self::Binary => None,
        }
    }

    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Python2 => "python2",
            Self::Python3 => "python3",
            Self::Perl => "perl",
            Self::Sh => "sh",
            Self::Bash => "bash",
            Self::Binary => "binary",
        }
    }

    /// Whether the executable itself must carry the execute bit (it is exec'd, not read).
    pub(crate) fn needs_exec_bit(self) -> bool {
        matches!(self, Self::Sh | Self::Binary)
    }
}

/// One validated external task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalTask {
    /// The task name; also its log file name.
    pub name: String,
    /// The cluster type, e.g. `TendbCluster`.
    pub cluster_type: String,
    /// How the executable is run.
    pub language: Language,
    /// The executable, possibly followed by arguments (`echo hello`).
    pub executable: String,
    /// Fixed arguments after the executable's own words.
    pub args: Vec<String>,
    /// Whether the executable lives in the collect folder.
    pub collected: bool,
    /// Optional human description (shown in the OpenAPI document).
    pub description: Option<String>,
    /// Whether schedulers should schedule it (`enable`, default true); it is served either way.
    pub enable: bool,
    /// The arguments a scheduler posts on schedule (`empty_param`, default none).
    pub empty_param: Vec<String>,
    /// When a scheduler should run it, if the config says.
    pub schedule: Option<Schedule>,
    /// How long a run may take before it is ended (`timeout`); `None`: the service's default.
    pub timeout: Option<std::time::Duration>,
    /// What a call does while a run of the task is active (`concurrency_policy`).
    pub concurrency_policy: ConcurrencyPolicy,
    /// Leave what the program started running when it exits by itself (`detach_children`).
    pub detach_children: bool,
}

/// What a call does while a run of the same task is active, as Kubernetes CronJob's
/// `concurrencyPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConcurrencyPolicy {
    /// Runs go on side by side.
    #[default]
    Allow,
    /// The call is refused (HTTP 409) naming the running session.
    Forbid,
    /// The running one is ended as a kill ends it, and the new one starts.
    Replace,
}

impl ConcurrencyPolicy {
    /// Every accepted spelling, as shown in errors and docs.
    pub const NAMES: &'static str = "allow, forbid, replace";

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allow" => Self::Allow,
            "forbid" => Self::Forbid,
            "replace" => Self::Replace,
            _ => return None,
        })
    }

    /// The spelling in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Forbid => "forbid",
            Self::Replace => "replace",
        }
    }
}

/// Which task an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    /// Zero-based position in the YAML list.
    pub index: usize,
    /// The task's name, when it has a readable one.
    pub name: Option<String>,
}

/// One problem with the config, with the context an operator needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The task, or `None` for a problem with the whole file.
    pub task: Option<TaskRef>,
    /// The field, when the problem is about one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about the whole file.
    pub fn file(message: impl Into<String>) -> Self {
        Self {
            task: None,
            field: None,
            message: message.into(),
        }
    }

    /// An error about one field of one task.
    pub fn field(task: &TaskRef, field: &str, message: impl Into<String>) -> Self {
        Self {
            task: Some(task.clone()),
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(task) = &self.task {
            match &task.name {
                Some(name) => write!(f, "task #{} `{}`: ", task.index + 1, name)?,
                None => write!(f, "task #{}: ", task.index + 1)?,
            }
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} error{} in the task config",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}
