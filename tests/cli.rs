//! The command line of the real binary: startup validation, check, list, version, help.

mod common;

use std::process::Command;

fn in_dir(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::copy_dir(&common::fixtures(), &dir.path().join("collect"));
    std::fs::write(dir.path().join("external-tasks.yaml"), yaml).unwrap();
    dir
}

const BAD: &str = r#"
- name: good
  cluster_type: A
  language: sh
  executable: echo
  collected: false
- name: typo
  cluster_type: A
  language: sh
  executable: echo
  colected: false
- name: abs
  cluster_type: A
  language: binary
  executable: /bin/true
  collected: true
- name: gone
  cluster_type: A
  language: python3
  executable: nope.py
  collected: true
- name: noexec
  cluster_type: A
  language: sh
  executable: not_executable.sh
  collected: true
"#;

#[test]
fn run_with_an_invalid_config_exits_naming_every_bad_task() {
    let dir = in_dir(BAD);
    let out = Command::new(common::binary())
        .current_dir(dir.path())
        .args(["run", "--address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "5 errors",
        "task #2 `typo`: field `colected`: unknown field",
        "task #2 `typo`: field `collected`: is required",
        "task #3 `abs`: field `executable`",
        "task #4 `gone`: field `executable`",
        "task #5 `noexec`: field `executable`",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    assert!(!err.contains("`good`"), "{err}");
    assert!(
        !dir.path().join("logs").exists(),
        "a rejected start must not create logs"
    );
}

#[test]
fn check_and_list_print_routes() {
    let dir = in_dir("- {name: demo1, cluster_type: TendbCluster, language: sh, executable: echo hello, collected: false}\n");
    let out = Command::new(common::binary())
        .current_dir(dir.path())
        .arg("check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("POST  /sync/tendb-cluster/demo1"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ok, 2 tasks"));

    let bad = in_dir(BAD);
    let out = Command::new(common::binary())
        .current_dir(bad.path())
        .args(["check", "--external-task-config", "external-tasks.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("task #3 `abs`"));

    let out = Command::new(common::binary())
        .current_dir(dir.path())
        .env("CS_EXTERNAL_TASK", "missing.yaml")
        .arg("list")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}

#[test]
fn version_and_help_name_every_variable() {
    let out = Command::new(common::binary())
        .arg("version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("celery-service {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(common::binary())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "CS_EXTERNAL_TASK",
        "CS_LOG_CONSOLE",
        "CS_ADDRESS",
        "CS_DB_ADDRESS",
        "CS_DB_USER",
        "CS_DB_PASSWORD",
        "CS_DB_NAME",
        "CS_WORKERS",
        "--no-log-console",
        "--collect-dir",
        "--log-dir",
        "0.0.0.0:80",
    ] {
        assert!(help.contains(var), "{var} missing from help:\n{help}");
    }
    // The top-level help says what each subcommand does, for a user, not for the code's readers.
    let out = Command::new(common::binary())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (command, says) in [
        ("run", "Serve every configured task over HTTP"),
        ("check", "Check the task config"),
        ("list", "Print every route"),
        ("openapi", "OpenAPI document"),
        ("version", "Print the version"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(command))
            .unwrap_or_else(|| panic!("{command} missing from:\n{help}"));
        assert!(line.contains(says), "{line}");
    }
    assert!(!help.contains("Boxed"), "{help}");
}

#[test]
fn run_refuses_zero_workers() {
    let dir = in_dir("[]");
    let out = Command::new(common::binary())
        .current_dir(dir.path())
        .args(["run", "--address", "127.0.0.1:0", "--workers", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers must be at least 1"), "{err}");
}
