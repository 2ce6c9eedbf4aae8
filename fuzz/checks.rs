//! The properties the fuzz targets check, in one file that both the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and the regression test (`tests/fuzz_regressions.rs`) include with
//! `#[path]`, so a crash the fuzzer finds is replayed by `cargo test` through the same check.
//!
//! Each check takes the raw input bytes and panics when a property does not hold:
//! - [`yaml_config`]: loading any text as the task config never panics, and every task it accepts
//!   builds an argv that ends with the POSTed strings as they are.
//! - [`request_body`]: parsing any body never panics, accepts exactly the JSON arrays of strings
//!   (or nothing) for an external task, and the strings it yields reach the argv unchanged.
//! - [`command_args`]: no POSTed string changes the argv, or for `sh` the words of the script.

#![allow(dead_code)]

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use celery_service::api::body::{lenient, task_input};
use celery_service::app::Input;
use celery_service::config::{parse_tasks, ExternalTask, Language};
use celery_service::runner::Invocation;
use celery_service::table::{RouteTable, TaskKind};

/// A collect folder with the bundled config's scripts in it (`s.sh` executable), so that fuzzed
/// configs with `collected: true` can get past the file checks. Made once per process.
pub fn collect_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("celery-service-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz collect folder");
        for (name, mode) in [("s.sh", 0o755), ("report.py", 0o644), ("kkk.pl", 0o644)] {
            let path = dir.join(name);
            std::fs::write(&path, "#!/bin/sh\n").expect("write a collect script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .expect("chmod a collect script");
        }
        dir
    })
}

/// POSTed strings that would change a command if they were pasted in unquoted.
const HOSTILE: &[&str] = &[
    "",
    " ",
    "a b",
    "'",
    "\"",
    "$(id)",
    "`id`",
    "; rm -rf /",
    "x\ny",
    "\\",
    "#c",
    "*",
    "-c",
    "$HOME",
];

/// Loads `data` (as UTF-8, lossily) as the task config, through the parser and the route table.
pub fn yaml_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_tasks(&text, collect_dir());
    let built = RouteTable::build(&text, collect_dir(), 1);
    if let Ok(tasks) = &parsed {
        let posted: Vec<String> = HOSTILE.iter().map(|s| s.to_string()).collect();
        for task in tasks {
            // The configured part of an `sh` script is trusted text pasted as written, so only
            // the non-shell argv has a property that holds for any accepted config.
            if task.language != Language::Sh {
                check_argv(&Invocation::new(task, collect_dir()), &posted);
            }
        }
    }
    if let Ok(table) = &built {
        assert!(
            parsed.is_ok(),
            "the table accepted a config the parser refused"
        );
        for task in table.tasks.values() {
            if let TaskKind::External {
                task: ext,
                invocation,
            } = &task.kind
            {
                assert_eq!(invocation, &Invocation::new(ext, collect_dir()));
            }
        }
    }
}

/// The config [`request_body`] serves: an `sh` task, a non-shell one and a collected script.
const BODY_CONFIG: &str = r#"
- name: demo1
  cluster_type: TendbCluster
  language: sh
  executable: echo hello
  args: ["aaa", "bbb"]
  collected: false
- name: demo2
  cluster_type: TendbCluster
  language: sh
  executable: s.sh
  collected: true
- name: shell_echo
  cluster_type: TendbCluster
  language: binary
  executable: /bin/echo
  args: ["echo:"]
  collected: false
- name: demopython
  cluster_type: sqlsvr
  language: python3
  executable: report.py
  args: ["--quick"]
  collected: true
"#;

/// Parses `data` as a request body for every task, external and built-in, and follows the
/// external tasks' arguments into their argv.
pub fn request_body(data: &[u8]) {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        RouteTable::build(BODY_CONFIG, collect_dir(), 1).expect("the fuzz body config is valid")
    });
    let value = lenient(data);
    let blank = data.iter().all(u8::is_ascii_whitespace);
    match &value {
        Ok(v) if blank => assert!(v.is_null(), "a blank body is null"),
        Ok(v) => assert_eq!(
            Some(v),
            serde_json::from_slice::<serde_json::Value>(data)
                .ok()
                .as_ref(),
            "a non-blank body is exactly its JSON"
        ),
        Err(_) => assert!(!blank && serde_json::from_slice::<serde_json::Value>(data).is_err()),
    }
    // What an external task must accept: no body, null, or an array of NUL-free strings.
    let expected: Option<Vec<String>> = match &value {
        Ok(serde_json::Value::Null) => Some(Vec::new()),
        Ok(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().filter(|s| !s.contains('\0')).map(str::to_string))
            .collect(),
        _ => None,
    };
    for task in table.tasks.values() {
        let input = task_input(task, data);
        match &task.kind {
            TaskKind::External { invocation, .. } => match (input, &expected) {
                (Ok(Input::Args(args)), Some(want)) => {
                    assert_eq!(&args, want, "the arguments are the body's strings");
                    // Every configured part of BODY_CONFIG is plain words.
                    match invocation.shell_script {
                        Some(_) => check_script(invocation, &args),
                        None => check_argv(invocation, &args),
                    }
                }
                (Err(msg), None) => assert!(!msg.is_empty(), "a refusal says why"),
                (Ok(_), None) => panic!("an external task accepted {:?}", value),
                (Err(msg), Some(_)) => panic!("an external task refused {value:?}: {msg}"),
                (Ok(Input::Builtin(..)), Some(_)) => panic!("an external task got built-in input"),
            },
            // A built-in task's parameters are its own business: only no panic here.
            TaskKind::Builtin(_) => drop(input),
        }
    }
}

/// Builds a task from `data` and checks the argv for the POSTed strings in it.
///
/// The input is split at `0xFF` bytes (never part of UTF-8) into segments, each read lossily:
/// the first byte of segment 0 picks the language and `collected`; segment 1 is the executable
/// and segment 2 the space-separated `args`, both cut down to plain words (the configured part
/// is trusted text; plain words make its shell words well defined); every later segment is one
/// POSTed string, as it is.
pub fn command_args(data: &[u8]) {
    let mut segments = data.split(|&b| b == 0xFF);
    let selector = segments
        .next()
        .and_then(|s| s.first().copied())
        .unwrap_or(0);
    let plain = |s: &[u8]| -> String {
        String::from_utf8_lossy(s)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || " _./=:+-%,@".contains(*c))
            .collect()
    };
    let executable = segments.next().map(plain).unwrap_or_default();
    let executable = if executable.trim().is_empty() {
        "prog".to_string()
    } else {
        executable
    };
    let args: Vec<String> = segments
        .next()
        .map(plain)
        .unwrap_or_default()
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let posted: Vec<String> = segments
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let languages = [
        Language::Python,
        Language::Python2,
        Language::Python3,
        Language::Perl,
        Language::Sh,
        Language::Bash,
        Language::Binary,
    ];
    let task = ExternalTask {
        name: "t".into(),
        cluster_type: "C".into(),
        language: languages[usize::from(selector) % languages.len()],
        executable,
        args,
        collected: selector & 0x80 != 0,
        description: None,
        enable: true,
        empty_param: Vec::new(),
        schedule: None,
        timeout: None,
        concurrency_policy: Default::default(),
        detach_children: false,
    };
    let invocation = Invocation::new(&task, collect_dir());
    if task.language == Language::Sh {
        check_script(&invocation, &posted);
    } else {
        check_argv(&invocation, &posted);
    }
}

/// Without a shell: the argv is the configured part, unchanged, then `posted` as it is.
pub fn check_argv(invocation: &Invocation, posted: &[String]) {
    assert!(invocation.shell_script.is_none());
    let base = invocation.args(&[]);
    let argv = invocation.args(posted);
    let want: Vec<OsString> = posted.iter().map(OsString::from).collect();
    assert_eq!(argv.len(), base.len() + posted.len(), "{argv:?}");
    assert_eq!(
        &argv[..base.len()],
        &base[..],
        "the configured argv changed"
    );
    assert_eq!(&argv[base.len()..], &want[..], "the posted strings changed");
}

/// With `sh -c <script>`: the argv is `-c` and one script whose shell words are the configured
/// words, unchanged and as many as before, then exactly the posted strings.
pub fn check_script(invocation: &Invocation, posted: &[String]) {
    assert_eq!(invocation.program, "sh");
    let base = invocation.args(&[]);
    let argv = invocation.args(posted);
    assert_eq!(argv.len(), 2, "{argv:?}");
    assert_eq!(argv[0], "-c");
    assert_eq!(base[0], "-c");
    let words = |s: &OsString| {
        shell_words::split(s.to_str().expect("the script is UTF-8"))
            .unwrap_or_else(|e| panic!("the script {s:?} does not split: {e}"))
    };
    let configured = words(&base[1]);
    let all = words(&argv[1]);
    assert_eq!(all.len(), configured.len() + posted.len(), "{all:?}");
    assert_eq!(
        &all[..configured.len()],
        &configured[..],
        "the configured words changed"
    );
    assert_eq!(
        &all[configured.len()..],
        posted,
        "the posted strings changed"
    );
}
