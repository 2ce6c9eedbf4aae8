//! How a task is run and what a sync call answers, through the real binary with real scripts in
//! every language: argument order, quoting of posted arguments, the last-line rules, failures, the
//! child's environment, stdin and signal mask, and a run the system refuses descriptors.

mod common;

use std::time::Duration;

use common::{poll, sync, Server, TASKS};
use serde_json::{json, Value};

/// The tasks of the descriptor test.
const FD_TASKS: &str = r#"
- name: up_then_sleep
  cluster_type: Runner
  language: sh
  executable: echo up; exec sleep 60
  collected: false
- name: hello
  cluster_type: Runner
  language: binary
  executable: echo hello
  collected: false
"#;

/// The grace between SIGTERM and SIGKILL of the descriptor test, to keep it short.
const GRACE: &str = "1s";

#[tokio::test]
async fn seed_example_answers_the_last_stdout_line() {
    let s = Server::start(TASKS, &[]);
    let v = sync(&s, "tendb-cluster/demo1", Some(r#"["123", "456"]"#)).await;
    assert_eq!(
        v,
        json!({"code": 0, "data": "hello aaa bbb 123 456", "msg": ""})
    );
    // curl -d sends a form content type; the body is still the JSON array.
    let resp = s
        .http
        .post(format!("{}/sync/tendb-cluster/demo1", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"["x"]"#)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"], "hello aaa bbb x");
    // No body at all: no extra arguments.
    let v = sync(&s, "tendb-cluster/demo1", None).await;
    assert_eq!(v["data"], "hello aaa bbb");
}

#[tokio::test]
async fn argument_order_holds_for_every_language() {
    let s = Server::start(TASKS, &[]);
    let post = Some(r#"["p1", "p 2"]"#);
    let cases = [
        // sh: YAML parts as written (quotes and $VAR are the shell's), posted parts quoted.
        ("tendb-cluster/sh-args", "x1|x 2|a1|sh_args|p1|p 2"),
        ("sqlsvr/py-args", "x1|x 2|a1|$HOME|p1|p 2"),
        ("sqlsvr/python-args", "x1|a1|p1|p 2"),
        ("redis/pl-args", "x1|a1|p1|p 2"),
        ("redis/bash-args", "bash:x1|a1|p1|p 2"),
        ("tendb-ha/bin-args", "x1|a1|p1|p 2"),
        ("tendb-ha/path-echo", "x1 a1 p1 p 2"),
    ];
    for (path, want) in cases {
        let v = sync(&s, path, post).await;
        assert_eq!(v["code"], 0, "{path}: {v}");
        assert_eq!(v["data"], want, "{path}: {v}");
    }
}

#[tokio::test]
async fn posted_arguments_never_become_shell_code() {
    let s = Server::start(TASKS, &[]);
    let marker = s.path("pwned");
    let m = marker.display();
    let attempts = [
        format!("; touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("' ; touch {m} ; '"),
        format!("\" ; touch {m} ; \""),
        format!("a\ntouch {m}"),
        format!("| touch {m}"),
        format!("&& touch {m}"),
        "$HOME".to_string(),
    ];
    let body = serde_json::to_string(&attempts).unwrap();
    let v = sync(&s, "tendb-cluster/sh-args", Some(&body)).await;
    assert_eq!(v["code"], 0, "{v}");
    assert!(!marker.exists(), "a posted argument ran as shell code");
    // Each attempt reached the script as one literal argument (the newline one spans two lines,
    // so check the text of the log instead of the last line).
    let log = s.log("sh_args");
    for a in &attempts {
        for part in a.split('\n') {
            assert!(log.contains(part), "{part:?} missing from log:\n{log}");
        }
    }
    let v = sync(&s, "tendb-cluster/demo1", Some(r#"["$(id)", "`id`"]"#)).await;
    assert_eq!(v["data"], "hello aaa bbb $(id) `id`");
}

#[tokio::test]
async fn failures_answer_code_1_with_the_reason() {
    let s = Server::start(TASKS, &[]);
    let v = sync(&s, "mysql/fail", None).await;
    assert_eq!(
        v,
        json!({"code": 1, "data": "partial result", "msg": "boom: disk full"})
    );
    let v = sync(&s, "mysql/silent-fail", None).await;
    assert_eq!(
        v,
        json!({"code": 1, "data": "nothing to say", "msg": "exited with code 4"})
    );
    let v = sync(&s, "mysql/self-kill", None).await;
    assert_eq!(v["code"], 1);
    assert_eq!(v["msg"], "killed by signal 9");
    let v = sync(&s, "tendb-ha/missing-tool", None).await;
    assert_eq!(v["code"], 1);
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains("cannot start `/nonexistent/tool`"), "{msg}");
}

#[tokio::test]
async fn last_line_rules() {
    let s = Server::start(TASKS, &[]);
    let v = sync(&s, "mysql/lines", None).await;
    assert_eq!(
        v,
        json!({"code": 0, "data": "no newline at end", "msg": "err two"})
    );
    let log = s.log("lines");
    assert!(log.contains("stdout second \u{fffd} bytes\n"), "{log}");
    assert!(log.contains("stdout first\n"), "{log}");
    assert!(log.contains("stderr err one\n"), "{log}");
}

#[tokio::test]
async fn children_inherit_the_environment_and_get_no_stdin() {
    let s = Server::start_with(TASKS, &[], |c| {
        c.env("CS_TEST_INHERITED", "yes");
        // The run's own value wins over one the service inherited.
        c.env("CS_SESSION_ID", "inherited-by-the-service");
    });
    let (status, v) = s.post("/async/mysql/env", None).await;
    assert_eq!(status, 200);
    let id = v["data"].as_str().unwrap().to_string();
    let done = s.wait_done(&id, Duration::from_secs(20)).await;
    assert_eq!(done["message"], format!("env Mysql {id}"));
    assert!(s.log("env").contains("stdout inherited=yes"));
    let v = sync(&s, "mysql/stdin", None).await;
    assert_eq!(v["data"], "stdin closed");
}

#[tokio::test]
async fn children_start_with_default_signals() {
    // The service ignores SIGPIPE (every Rust program does); a child that inherited that would
    // see `yes` complain about a broken pipe instead of ending quietly.
    let s = Server::start(TASKS, &[]);
    let v = sync(&s, "runner/broken-pipe", None).await;
    assert_eq!(v, json!({"code": 0, "data": "y", "msg": ""}));
    // The service blocks SIGCHLD in all its threads; a child must not inherit that (a script
    // waiting for its own background jobs would hang), nor any other blocked signal. A binary
    // task, because sh would clear the mask itself.
    let v = sync(&s, "runner/signal-mask", None).await;
    assert_eq!(
        v,
        json!({"code": 0, "data": "SigBlk:\t0000000000000000", "msg": ""})
    );
}

#[tokio::test]
async fn a_run_refused_file_descriptors_fails_with_a_clear_error() {
    // A hard limit the service cannot raise: a few runs fit, then one cannot get its pipes. Two
    // workers whatever the cores, as each worker's runtime holds descriptors of its own.
    let extra = ["--kill-grace", GRACE, "--workers", "2"];
    let s = Server::start_after("ulimit -n 48", FD_TASKS, &extra);
    let mut running = Vec::new();
    let refused = loop {
        assert!(
            running.len() < 40,
            "48 descriptors held {} runs",
            running.len()
        );
        let (status, v) = s.post("/async/runner/up-then-sleep", None).await;
        assert_eq!(status, 200, "{v}");
        let id = v["data"].as_str().unwrap().to_string();
        // Started (it printed) or refused (done with an error), whichever comes.
        let session = poll(Duration::from_secs(10), || async {
            let v = s.session(&id).await;
            (v["done"] == true || v["message"] == "up").then_some(v)
        })
        .await;
        if session["done"] == true {
            break session;
        }
        running.push(id);
    };
    assert!(!running.is_empty(), "not one run started: {refused}");
    assert_eq!(
        refused["error"], "cannot start `sh`: too many open files",
        "{refused}"
    );
    // The service goes on: the runs end, and then a new one starts again.
    for id in &running {
        let (status, v) = s
            .post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
            .await;
        assert_eq!((status, &v["data"]["done"]), (200, &json!(true)), "{v}");
    }
    let (status, v) = s.post("/sync/runner/hello", None).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"code": 0, "data": "hello", "msg": ""}));
}
