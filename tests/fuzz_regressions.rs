//! Replays every committed fuzz input through the fuzz targets' own checks (`fuzz/checks.rs`):
//! the crashes the fuzzers ever found (`fuzz/regressions/<target>/`) and the seed corpora
//! (`fuzz/corpus/<target>/`), so `cargo test` keeps them fixed without nightly or cargo-fuzz.
//! It also runs the POSTed strings of the `sh` seeds through a real `sh`, to show that the shell
//! words the checks compare are the argv `sh` really gives the script.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};
use std::process::Command;

use celery_service::config::{ExternalTask, Language};
use celery_service::runner::Invocation;

/// Every file under `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files
}

/// Runs `check` on every regression and corpus file of `target`; fails naming each bad file.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut failed = Vec::new();
    let mut count = 0;
    for kind in ["regressions", "corpus"] {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).unwrap();
            count += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "{target} fails on: {failed:#?}");
    count
}

#[test]
fn every_yaml_config_input_loads_without_a_panic() {
    assert!(replay("yaml_config", checks::yaml_config) >= 10);
}

#[test]
fn every_request_body_input_parses_to_the_same_argv_strings() {
    assert!(replay("request_body", checks::request_body) >= 10);
}

#[test]
fn every_command_args_input_keeps_the_posted_strings_as_they_are() {
    assert!(replay("command_args", checks::command_args) >= 5);
}

#[test]
fn a_real_sh_receives_the_posted_strings_as_they_are() {
    // `printf '%s\n' "$#"; printf '[%s]' "$@"`-like: the configured part prints each word it is
    // given; the script's own words end with the POSTed strings, so sh hands them to printf.
    let task = ExternalTask {
        name: "t".into(),
        cluster_type: "C".into(),
        language: Language::Sh,
        executable: "printf".into(),
        args: vec!["'<%s>'".into()],
        collected: false,
        description: None,
        enable: true,
        empty_param: Vec::new(),
        schedule: None,
        timeout: None,
        concurrency_policy: Default::default(),
        detach_children: false,
    };
    let invocation = Invocation::new(&task, Path::new("/nonexistent"));
    let mut posted: Vec<String> = [
        "it's",
        "\"q\"",
        "$(echo pwned)",
        "`echo pwned`",
        "a\nb",
        "; echo pwned",
        "\\",
        "$HOME",
        "*",
        "",
        " x ",
        "#c",
        "\u{e9}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // And every POSTed string of the request body seeds that a program argument can hold.
    for path in inputs("corpus", "request_body") {
        if let Ok(serde_json::Value::Array(items)) =
            serde_json::from_slice(&std::fs::read(&path).unwrap())
        {
            posted.extend(
                items
                    .iter()
                    .filter_map(|v| v.as_str())
                    .filter(|s| !s.contains('\0'))
                    .map(str::to_string),
            );
        }
    }
    checks::check_script(&invocation, &posted);
    let out = Command::new(&invocation.program)
        .args(invocation.args(&posted))
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{out:?}");
    let want: String = posted.iter().map(|p| format!("<{p}>")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}
