//! Reads the task YAML into [`ExternalTask`]s, checking every field of every task and collecting
//! every problem, each naming its task and field.

use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::schedule::{Schedule, ScheduleError, FIELDS};
use super::{
    executable, ConcurrencyPolicy, ConfigError, ConfigErrors, ExternalTask, Language, TaskRef,
};

const KNOWN_FIELDS: &[&str] = &[
    "name",
    "cluster_type",
    "language",
    "executable",
    "args",
    "collected",
    "description",
    "enable",
    "empty_param",
    "schedule",
    "timeout",
    "concurrency_policy",
    "detach_children",
];

/// Parses and validates the whole task list. `collect_dir` is where collected executables live.
pub fn parse_tasks(text: &str, collect_dir: &Path) -> Result<Vec<ExternalTask>, ConfigErrors> {
    let doc: Value = serde_yaml_ng::from_str(text)
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

/// One task's mapping, read field by field; every problem goes to `errors`.
struct Fields<'a> {
    map: &'a Mapping,
    task: TaskRef,
    errors: &'a mut Vec<ConfigError>,
}

impl Fields<'_> {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors
            .push(ConfigError::field(&self.task, field, message));
    }

    /// The field converted by `convert`; `None` when it is absent or null (nothing is pushed)
    /// or when `convert` refuses it (`must be <what>, found …` is pushed).
    fn read<T>(
        &mut self,
        field: &str,
        what: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Option<T> {
        let map = self.map;
        let value = map.get(field).filter(|v| !v.is_null())?;
        let converted = convert(value);
        if converted.is_none() {
            self.error(field, format!("must be {what}, found {}", kind(value)));
        }
        converted
    }

    /// Like [`Fields::read`], pushing `missing` when the field is absent or null.
    fn require<T>(
        &mut self,
        field: &str,
        what: &str,
        missing: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Option<T> {
        if self.map.get(field).is_none_or(Value::is_null) {
            self.error(field, missing);
            return None;
        }
        self.read(field, what, convert)
    }

    /// A required, non-blank string.
    fn string(&mut self, field: &str) -> Option<String> {
        let s = self.require(field, "a string", "is required", |v| {
            v.as_str().map(str::to_string)
        })?;
        if s.trim().is_empty() {
            self.error(field, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A list of strings (numbers and booleans are taken as written); each bad element is
    /// named by its index. Absent or null is an empty list.
    fn strings(&mut self, field: &str) -> Option<Vec<String>> {
        if self.map.get(field).is_none_or(Value::is_null) {
            return Some(Vec::new());
        }
        let map = self.map;
        let items = map.get(field).and_then(Value::as_sequence);
        let items = self.read(field, "a list of strings", |_| items)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            match scalar_string(v) {
                Some(s) => out.push(s),
                None => self.error(
                    &format!("{field}[{i}]"),
                    format!("must be a string, found {}", kind(v)),
                ),
            }
        }
        Some(out)
    }

    /// An optional schedule: a crontab line, or a mapping of `crontab`'s keyword arguments.
    fn schedule(&mut self) -> Option<Schedule> {
        let map = self.map;
        let value = map.get("schedule").filter(|v| !v.is_null())?;
        let parsed = match value {
            Value::String(line) => Schedule::from_line(line),
            Value::Mapping(map) => {
                let mut texts = Vec::new();
                for (key, v) in map {
                    let key_text = key
                        .as_str()
                        .map_or_else(|| format!("{key:?}"), str::to_string);
                    let Some(field) = FIELDS.iter().find(|f| f.name == key_text) else {
                        self.error(
                            &format!("schedule.{key_text}"),
                            format!(
                                "unknown field (known fields: {})",
                                FIELDS.map(|f| f.name).join(", ")
                            ),
                        );
                        continue;
                    };
                    match scalar_string(v) {
                        Some(text) => texts.push((field.name, text)),
                        None => self.error(
                            &format!("schedule.{key_text}"),
                            format!("must be a string like \"*/5\", found {}", kind(v)),
                        ),
                    }
                }
                Schedule::from_fields(|name| {
                    texts
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, t)| t.as_str())
                })
            }
            other => {
                self.error(
                    "schedule",
                    format!(
                        "must be a crontab line like \"*/5 2-4 * * 1-5\" or a mapping of \
                         minute, hour, day_of_week, day_of_month, month_of_year; found {}",
                        kind(other)
                    ),
                );
                return None;
            }
        };
        parsed
            .map_err(|errors| {
                for ScheduleError { field, message } in errors {
                    match field {
                        Some(f) => self.error(&format!("schedule.{f}"), message),
                        None => self.error("schedule", message),
                    }
                }
            })
            .ok()
    }
}

impl Fields<'_> {
    /// Every key that is not a known field is an error naming the known ones.
    fn unknown_fields(&mut self) {
        for key in self.map.keys() {
            match key.as_str() {
                Some(k) if KNOWN_FIELDS.contains(&k) => {}
                Some(k) => self.error(
                    k,
                    format!("unknown field (known fields: {})", KNOWN_FIELDS.join(", ")),
                ),
                None => self.error(&format!("{key:?}"), "field names must be strings"),
            }
        }
    }

    /// `cluster_type`: required, and it must make a URL segment.
    fn cluster_type(&mut self) -> Option<String> {
        let cluster_type = self.string("cluster_type");
        if cluster_type
            .as_deref()
            .is_some_and(|ct| super::segment(ct).is_empty())
        {
            self.error("cluster_type", "must contain at least one letter or digit");
        }
        cluster_type
    }

    /// `language`: required, one of the languages the service runs.
    fn language(&mut self) -> Option<Language> {
        let text = self.string("language")?;
        let parsed = Language::parse(&text);
        if parsed.is_none() {
            self.error(
                "language",
                format!("`{text}` is not one of {}", Language::NAMES),
            );
        }
        parsed
    }

    /// `timeout`: optional, a duration longer than zero.
    fn timeout(&mut self) -> Option<std::time::Duration> {
        let text = self.read(
            "timeout",
            "a duration like \"30s\", \"15m\" or \"2h\"",
            |v| v.as_str().map(str::to_string),
        )?;
        match humantime::parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                self.error("timeout", "must be longer than 0s");
                Some(d)
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    "timeout",
                    format!("`{text}` is not a duration like 30s, 15m or 2h: {e}"),
                );
                None
            }
        }
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
    let before = errors.len();
    let mut f = Fields {
        map,
        task: TaskRef { index, name },
        errors,
    };
    f.unknown_fields();
    let name = f.string("name");
    if let Some(name) = &name {
        check_name(name, &mut f);
    }
    let cluster_type = f.cluster_type();
    let language = f.language();
    let executable = f.string("executable");
    let args = f.strings("args");
    let collected = f.require(
        "collected",
        "true or false",
        "is required (true: the executable is in the collect folder; false: found as written or on PATH)",
        Value::as_bool,
    );
    let description = f.read("description", "a string", |v| {
        v.as_str().map(str::to_string)
    });
    let enable = f.read("enable", "true or false", Value::as_bool);
    let empty_param = f.strings("empty_param");
    let schedule = f.schedule();
    let timeout = f.timeout();
    let concurrency_policy = f.read(
        "concurrency_policy",
        &format!("one of {}", ConcurrencyPolicy::NAMES),
        |v| ConcurrencyPolicy::parse(v.as_str()?),
    );
    let detach_children = f.read("detach_children", "true or false", Value::as_bool);

    if let (Some(exe), Some(lang), Some(collected)) = (&executable, language, collected) {
        if let Err(message) = executable::check(exe, lang, collected, collect_dir) {
            f.error("executable", message);
        }
    }

    if f.errors.len() > before {
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
        enable: enable.unwrap_or(true),
        empty_param: empty_param?,
        schedule,
        timeout,
        concurrency_policy: concurrency_policy.unwrap_or_default(),
        detach_children: detach_children.unwrap_or(false),
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

/// The name becomes a file name under the log folder and a URL segment, so it is kept to a
/// conservative alphabet.
fn check_name(name: &str, f: &mut Fields<'_>) {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok_chars || name.starts_with('.') {
        f.error(
            "name",
            format!("`{name}` may only use letters, digits, `_`, `-` and `.`, and must not start with `.`"),
        );
    }
}

#[cfg(test)]
#[path = "parse_run_control_tests.rs"]
mod run_control_tests;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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
        // The scheduling fields default to what the original service did.
        assert!(tasks
            .iter()
            .all(|t| t.enable && t.empty_param.is_empty() && t.schedule.is_none()));
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
