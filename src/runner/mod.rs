//! Runs external tasks: turns a task and the POSTed arguments into an argv, and owns the child
//! processes (the only module that knows pids and signals).
//!
//! The argument order is the seed's: the words of `executable` after the first, then `args`, then
//! the POSTed strings. For `sh` the YAML parts are trusted config and are pasted into the
//! `sh -c` script as written (they may use `$VAR`), while every POSTed argument is quoted with
//! `shell-words`, so a request body can never become shell code. Every other language runs
//! without a shell at all.
//!
//! Children are started by `command` (tokio's process API wrapped by `process-wrap`), run and
//! read by `process`, and ended by `group::end_run`, the one way a run is stopped before its time;
//! how the program ended is one [`Ending`], made into the run's [`RunResult`] by the supervisor.

mod cgroup;
mod command;
mod descendants;
mod group;
mod process;
mod procs;
mod result;
mod stop;
pub mod tracking;

use std::ffi::OsString;
use std::path::Path;

pub use process::{run, LineSink, Progress, RunEnv};
pub use result::{Ending, How, RunResult};
pub use stop::{Stop, StopReason};

use crate::config::{ExternalTask, Language};

/// How to start one external task, computed once per config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program handed to exec.
    pub program: OsString,
    /// Arguments that come before the POSTed ones (for `sh`: `-c` only).
    pub fixed: Vec<OsString>,
    /// For `sh`: the script text the POSTed arguments are appended to.
    pub shell_script: Option<String>,
}

impl Invocation {
    /// Prepares `task`; `collect_dir` is where collected executables live.
    ///
    /// The task has been validated, so splitting `executable` cannot fail here; should it anyway,
    /// the whole string is treated as one word and the run will fail with a clear spawn error.
    pub fn new(task: &ExternalTask, collect_dir: &Path) -> Self {
        let resolve = |first: &str| -> OsString {
            if task.collected {
                collect_dir.join(first).into_os_string()
            } else {
                OsString::from(first)
            }
        };
        if task.language == Language::Sh {
            let exe = task.executable.trim();
            let (first, rest) = exe.split_once(char::is_whitespace).unwrap_or((exe, ""));
            let mut script = if task.collected {
                shell_words::quote(&resolve(first).to_string_lossy()).into_owned()
            } else {
                first.to_string()
            };
            for part in std::iter::once(rest.trim()).chain(task.args.iter().map(String::as_str)) {
                if !part.is_empty() {
                    script.push(' ');
                    script.push_str(part);
                }
            }
            return Self {
                program: OsString::from("sh"),
                fixed: vec![OsString::from("-c")],
                shell_script: Some(script),
            };
        }
        let words =
            shell_words::split(&task.executable).unwrap_or_else(|_| vec![task.executable.clone()]);
        let (first, rest) = words
            .split_first()
            .map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
        let exe = resolve(first);
        let mut fixed: Vec<OsString> = Vec::new();
        let program = match task.language.interpreter() {
            Some(interp) => {
                fixed.push(exe);
                OsString::from(interp)
            }
            None => exe,
        };
        fixed.extend(rest.iter().map(OsString::from));
        fixed.extend(task.args.iter().map(OsString::from));
        Self {
            program,
            fixed,
            shell_script: None,
        }
    }

    /// The full argv after the program for one call with `posted` arguments.
    pub fn args(&self, posted: &[String]) -> Vec<OsString> {
        let mut args = self.fixed.clone();
        match &self.shell_script {
            Some(script) => {
                let mut script = script.clone();
                for p in posted {
                    script.push(' ');
                    script.push_str(&shell_words::quote(p));
                }
                args.push(OsString::from(script));
            }
            None => args.extend(posted.iter().map(OsString::from)),
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(language: Language, executable: &str, args: &[&str], collected: bool) -> ExternalTask {
        ExternalTask {
            name: "t".into(),
            cluster_type: "C".into(),
            language,
            executable: executable.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            collected,
            description: None,
            enable: true,
            empty_param: Vec::new(),
            schedule: None,
            timeout: None,
            concurrency_policy: Default::default(),
            detach_children: false,
        }
    }

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn seed_sh_example() {
        let inv = Invocation::new(
            &task(Language::Sh, "echo hello", &["aaa", "bbb"], false),
            Path::new("/c"),
        );
        assert_eq!(inv.program, "sh");
        let args = strings(inv.args(&["123".into(), "456".into()]));
        assert_eq!(args, vec!["-c", "echo hello aaa bbb 123 456"]);
    }

    #[test]
    fn posted_sh_arguments_are_quoted_config_is_not() {
        let inv = Invocation::new(
            &task(Language::Sh, "echo $HOME", &["$USER"], false),
            Path::new("/c"),
        );
        let args = strings(inv.args(&["; touch /tmp/x".into(), "$(id)".into(), "it's".into()]));
        assert_eq!(
            args[1],
            r#"echo $HOME $USER '; touch /tmp/x' '$(id)' 'it'\''s'"#
        );
    }

    #[test]
    fn collected_paths_resolve_into_collect_dir() {
        let inv = Invocation::new(
            &task(Language::Sh, "my dir.sh -v", &[], true),
            Path::new("/opt/c d"),
        );
        assert_eq!(strings(inv.args(&[]))[1], "'/opt/c d/my' dir.sh -v");
        let inv = Invocation::new(
            &task(Language::Python3, "x.py -a 'b c'", &["d"], true),
            Path::new("/c"),
        );
        assert_eq!(inv.program, "python3");
        assert_eq!(
            strings(inv.args(&["e".into()])),
            vec!["/c/x.py", "-a", "b c", "d", "e"]
        );
        let inv = Invocation::new(
            &task(Language::Binary, "tool 1", &["2"], false),
            Path::new("/c"),
        );
        assert_eq!(inv.program, "tool");
        assert_eq!(strings(inv.args(&["3".into()])), vec!["1", "2", "3"]);
    }
}
