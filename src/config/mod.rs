//! The external task YAML: its model, and validation that reports every error at once.
//!
//! Parsing is done in two stages. The YAML is first read as plain values, then every task is
//! checked field by field, so that one load can report a typo in task 3 and a missing script in
//! task 7 together, each error naming the task (index and name) and the field.
//!
//! [`watch`] notices when the file changes on disk, so the service can reload it.

pub mod watch;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use serde_yaml::{Mapping, Value};

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

    fn parse(s: &str) -> Option<Self> {
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
    fn needs_exec_bit(self) -> bool {
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

const KNOWN_FIELDS: &[&str] = &[
    "name",
    "cluster_type",
    "language",
    "executable",
    "args",
    "collected",
    "description",
];

/// Parses and validates the whole task list. `collect_dir` is where collected executables live.
pub fn parse_tasks(text: &str, collect_dir: &Path) -> Result<Vec<ExternalTask>, ConfigErrors> {
    let doc: Value = serde_yaml::from_str(text)
        .map_err(|e| ConfigErrors(vec![ConfigError::file(format!("not valid YAML: {e}"))]))?;
    let items = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => {
            return Err(ConfigErrors(vec![ConfigError::file(format!(
                "the file must be a YAML list of tasks, found {}",
                kind(&other)
            ))]))
        }
    };
    let mut errors = Vec::new();
    let mut tasks = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if let Some(task) = parse_task(index, item, collect_dir, &mut errors) {
            tasks.push(task);
        }
    }
    if errors.is_empty() {
        Ok(tasks)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Reads one task; pushes every problem it finds and returns the task only when it has none.
fn parse_task(
    index: usize,
    item: &Value,
    collect_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<ExternalTask> {
    let Value::Mapping(map) = item else {
        errors.push(ConfigError {
            task: Some(TaskRef { index, name: None }),
            field: None,
            message: format!("a task must be a mapping of fields, found {}", kind(item)),
        });
        return None;
    };
    let name = map.get("name").and_then(Value::as_str).map(str::to_string);
    let task = TaskRef { index, name };
    let before = errors.len();

    for key in map.keys() {
        match key.as_str() {
            Some(k) if KNOWN_FIELDS.contains(&k) => {}
            Some(k) => errors.push(ConfigError::field(
                &task,
                k,
                format!("unknown field (known fields: {})", KNOWN_FIELDS.join(", ")),
            )),
            None => errors.push(ConfigError::field(
                &task,
                &format!("{key:?}"),
                "field names must be strings",
            )),
        }
    }

    let name = required_string(map, &task, "name", errors);
    if let Some(name) = &name {
        check_name(name, &task, errors);
    }
    let cluster_type = required_string(map, &task, "cluster_type", errors);
    if let Some(ct) = &cluster_type {
        if crate::table::segment(ct).is_empty() {
            errors.push(ConfigError::field(
                &task,
                "cluster_type",
                "must contain at least one letter or digit",
            ));
        }
    }
    let language = required_string(map, &task, "language", errors).and_then(|l| {
        let parsed = Language::parse(&l);
        if parsed.is_none() {
            errors.push(ConfigError::field(
                &task,
                "language",
                format!("`{l}` is not one of {}", Language::NAMES),
            ));
        }
        parsed
    });
    let executable = required_string(map, &task, "executable", errors);
    let args = match map.get("args") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Sequence(items)) => {
            let mut args = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                match scalar_string(v) {
                    Some(s) => args.push(s),
                    None => errors.push(ConfigError::field(
                        &task,
                        &format!("args[{i}]"),
                        format!("must be a string, found {}", kind(v)),
                    )),
                }
            }
            Some(args)
        }
        Some(other) => {
            errors.push(ConfigError::field(
                &task,
                "args",
                format!("must be a list of strings, found {}", kind(other)),
            ));
            None
        }
    };
    let collected = match map.get("collected") {
        Some(Value::Bool(b)) => Some(*b),
        None | Some(Value::Null) => {
            errors.push(ConfigError::field(
                &task,
                "collected",
                "is required (true: the executable is in the collect folder; false: found as written or on PATH)",
            ));
            None
        }
        Some(other) => {
            errors.push(ConfigError::field(
                &task,
                "collected",
                format!("must be true or false, found {}", kind(other)),
            ));
            None
        }
    };
    let description = match map.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(ConfigError::field(
                &task,
                "description",
                format!("must be a string, found {}", kind(other)),
            ));
            None
        }
    };

    if let (Some(exe), Some(lang), Some(collected)) = (&executable, language, collected) {
        check_executable(exe, lang, collected, collect_dir, &task, errors);
    }

    if errors.len() > before {
        return None;
    }
    Some(ExternalTask {
        name: name?,
        cluster_type: cluster_type?,
        language: language?,
        executable: executable?,
        args: args?,
        collected: collected?,
        description,
    })
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn required_string(
    map: &Mapping,
    task: &TaskRef,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    match map.get(field) {
        None | Some(Value::Null) => {
            errors.push(ConfigError::field(task, field, "is required"));
            None
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            errors.push(ConfigError::field(task, field, "must not be empty"));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(ConfigError::field(
                task,
                field,
                format!("must be a string, found {}", kind(other)),
            ));
            None
        }
    }
}

/// The name becomes a file name under the log folder and a URL segment, so it is kept to a
/// conservative alphabet.
fn check_name(name: &str, task: &TaskRef, errors: &mut Vec<ConfigError>) {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok_chars || name.starts_with('.') {
        errors.push(ConfigError::field(
            task,
            "name",
            format!("`{name}` may only use letters, digits, `_`, `-` and `.`, and must not start with `.`"),
        ));
    }
}

fn check_executable(
    exe: &str,
    lang: Language,
    collected: bool,
    collect_dir: &Path,
    task: &TaskRef,
    errors: &mut Vec<ConfigError>,
) {
    let first = if lang == Language::Sh {
        exe.split_whitespace().next().map(str::to_string)
    } else {
        match shell_words::split(exe) {
            Ok(words) => words.into_iter().next(),
            Err(e) => {
                errors.push(ConfigError::field(
                    task,
                    "executable",
                    format!("cannot be split into words: {e}"),
                ));
                return;
            }
        }
    };
    let Some(first) = first else {
        errors.push(ConfigError::field(task, "executable", "must not be empty"));
        return;
    };
    if !collected {
        return;
    }
    let rel = Path::new(&first);
    if rel.is_absolute() {
        errors.push(ConfigError::field(
            task,
            "executable",
            format!("`{first}` is absolute, but a collected executable is a path inside the collect folder"),
        ));
        return;
    }
    if rel.components().any(|c| c == Component::ParentDir) {
        errors.push(ConfigError::field(
            task,
            "executable",
            format!(
                "`{first}` uses `..`: a collected executable must stay inside the collect folder"
            ),
        ));
        return;
    }
    let path = collect_dir.join(rel);
    match std::fs::metadata(&path) {
        Err(e) => errors.push(ConfigError::field(
            task,
            "executable",
            format!("`{}` cannot be read: {e}", path.display()),
        )),
        Ok(meta) if !meta.is_file() => errors.push(ConfigError::field(
            task,
            "executable",
            format!("`{}` is not a file", path.display()),
        )),
        Ok(meta) if lang.needs_exec_bit() && meta.permissions().mode() & 0o111 == 0 => {
            errors.push(ConfigError::field(
                task,
                "executable",
                format!(
                    "`{}` is not executable (language `{}` runs it directly): chmod +x it",
                    path.display(),
                    lang.as_str()
                ),
            ))
        }
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, u32)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in files {
            let p = dir.path().join(name);
            std::fs::write(&p, "#!/bin/sh\necho hi\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        dir
    }

    #[test]
    fn seed_example_parses() {
        let dir = dir_with(&[("s.sh", 0o755), ("kkk.pl", 0o644)]);
        let yaml = r#"
- name: demo1
  cluster_type: TendbCluster
  language: sh
  executable: echo hello
  args: ["aaa", "bbb"]
  collected: false
- name: demo2
  cluster_type: TendbCluster
  language: shell
  executable: s.sh
  collected: true
- name: demoperl
  cluster_type: redis
  language: perl
  executable: kkk.pl
  collected: true
"#;
        let tasks = parse_tasks(yaml, dir.path()).unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[0].args, vec!["aaa", "bbb"]);
        assert_eq!(tasks[1].language, Language::Sh);
        assert_eq!(tasks[2].language, Language::Perl);
    }

    #[test]
    fn every_error_is_reported_with_task_and_field() {
        let dir = dir_with(&[("plain.sh", 0o644)]);
        let yaml = r#"
- name: ok
  cluster_type: A
  language: sh
  executable: echo
  collected: false
- name: typo
  cluster_type: A
  language: sh
  executable: echo
  colected: false
- name: badlang
  cluster_type: A
  language: ruby
  executable: x.rb
  collected: false
- name: abs
  cluster_type: A
  language: binary
  executable: /bin/true
  collected: true
- name: escape
  cluster_type: A
  language: binary
  executable: ../etc/passwd
  collected: true
- name: missing
  cluster_type: A
  language: python
  executable: nope.py
  collected: true
- name: noexec
  cluster_type: A
  language: sh
  executable: plain.sh
  collected: true
- cluster_type: A
  language: sh
  executable: echo
  collected: false
"#;
        let errs = parse_tasks(yaml, dir.path()).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("task #2 `typo`: field `colected`: unknown field"),
            "{text:#?}"
        );
        assert!(
            has("task #2 `typo`: field `collected`: is required"),
            "{text:#?}"
        );
        assert!(
            has("task #3 `badlang`: field `language`: `ruby` is not one of"),
            "{text:#?}"
        );
        assert!(
            has("task #4 `abs`: field `executable`: `/bin/true` is absolute"),
            "{text:#?}"
        );
        assert!(
            has("task #5 `escape`: field `executable`: `../etc/passwd` uses `..`"),
            "{text:#?}"
        );
        assert!(has("task #6 `missing`: field `executable`"), "{text:#?}");
        assert!(has("task #7 `noexec`: field `executable`"), "{text:#?}");
        assert!(has("task #8: field `name`: is required"), "{text:#?}");
        assert_eq!(errs.len(), 8, "{text:#?}");
    }

    #[test]
    fn not_a_list_and_broken_yaml_are_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = parse_tasks("a: 1", dir.path()).unwrap_err();
        assert!(e.to_string().contains("must be a YAML list"), "{e}");
        let e = parse_tasks("- name: [", dir.path()).unwrap_err();
        assert!(e.to_string().contains("not valid YAML"), "{e}");
        assert!(parse_tasks("", dir.path()).unwrap().is_empty());
    }

    #[test]
    fn names_are_kept_to_a_safe_alphabet() {
        let dir = tempfile::tempdir().unwrap();
        let yaml =
            "- {name: ../x, cluster_type: A, language: sh, executable: echo, collected: false}";
        let e = parse_tasks(yaml, dir.path()).unwrap_err();
        assert!(e.to_string().contains("field `name`"), "{e}");
    }
}
