//! Every process of a run is ended when the run is ended, whoever ends it: a kill request, a sync
//! client hanging up, the service shutting down. Checked on `/proc`, never on the service's word,
//! with a grandchild that ignores SIGTERM (only SIGKILL to the whole group ends it).
//!
//! Also: a run refused file descriptors fails with a clear error, and the service goes on.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{group_members, poll, process_gone, state_and_group, Server};
use serde_json::json;

const TASKS: &str = r#"
- name: stubborn
  cluster_type: Runner
  language: binary
  executable: stubborn.sh
  collected: true
- name: up_then_sleep
  cluster_type: Runner
  language: sh
  executable: echo up; exec sleep 60
  collected: false
- name: background
  cluster_type: Runner
  language: sh
  executable: sleep 5 >/dev/null 2>&1 & echo started $!
  collected: false
- name: hello
  cluster_type: Runner
  language: binary
  executable: echo hello
  collected: false
"#;

/// The grace between SIGTERM and SIGKILL the servers here use, to keep the tests short.
const GRACE: &str = "1s";

/// The pids `stubborn.sh` writes to `file`: its own (the run's process group) and its
/// grandchild's, once it has written them; checks both are alive and in that group.
async fn stubborn_pids(file: &Path) -> (i32, i32) {
    let (leader, grandchild) = poll(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(file).ok()?;
        let (a, b) = text.trim().split_once(' ')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    })
    .await;
    assert_eq!(state_and_group(leader).map(|s| s.1), Some(leader), "leader");
    assert_eq!(state_and_group(grandchild).map(|s| s.1), Some(leader));
    assert!(group_members(leader).contains(&grandchild));
    (leader, grandchild)
}

/// Nothing of group `pgid` runs any more and `grandchild` is gone (or a zombie no one runs).
fn assert_group_gone(pgid: i32, grandchild: i32, when: &str) {
    assert!(
        process_gone(grandchild),
        "{when}: grandchild {grandchild} alive"
    );
    let left = group_members(pgid);
    assert!(left.is_empty(), "{when}: group {pgid} still has {left:?}");
}

/// The task log tells every step of ending group `pgid` with `grace`.
fn assert_logged_ending(log: &str, pgid: i32) {
    for want in [
        format!("event SIGTERM to process group {pgid}\n"),
        format!("still alive after {GRACE} grace; SIGKILL to process group {pgid}"),
        format!("event process group {pgid} gone"),
    ] {
        assert!(log.contains(&want), "{want:?} missing from the log:\n{log}");
    }
}

#[tokio::test]
async fn kill_ends_a_grandchild_that_ignores_sigterm_before_answering() {
    let s = Server::start(TASKS, &["--kill-grace", GRACE]);
    let pidfile = s.path("pids");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    let (_, v) = s.post("/async/runner/stubborn", Some(&body)).await;
    let id = v["data"].as_str().unwrap().to_string();
    let (leader, grandchild) = stubborn_pids(&pidfile).await;

    let (status, v) = s
        .post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
        .await;
    assert_eq!(status, 200, "{v}");
    // Checked at once, not polled: the answer says the run has ended, so all of it must have.
    assert_group_gone(leader, grandchild, "after the kill answered");
    assert_eq!(v["data"]["done"], true, "{v}");
    let error = v["data"]["error"].as_str().unwrap();
    assert!(error.starts_with("killed on request"), "{error}");
    assert_eq!(s.session(&id).await["done"], true);
    assert_logged_ending(&s.log("stubborn"), leader);
}

#[tokio::test]
async fn shutdown_ends_a_grandchild_that_ignores_sigterm_before_exiting() {
    let mut s = Server::start(TASKS, &["--kill-grace", GRACE]);
    let pidfile = s.path("pids");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    s.post("/async/runner/stubborn", Some(&body)).await;
    let (leader, grandchild) = stubborn_pids(&pidfile).await;

    let status = s.stop();
    assert!(status.success(), "{status}");
    assert_group_gone(leader, grandchild, "after the service exited");
    assert_logged_ending(&s.log("stubborn"), leader);
}

#[tokio::test]
async fn a_sync_client_hanging_up_ends_a_grandchild_that_ignores_sigterm() {
    let s = Server::start(TASKS, &["--kill-grace", GRACE]);
    let pidfile = s.path("pids");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let call = client
        .post(format!("{}/sync/runner/stubborn", s.base))
        .body(body)
        .send();
    let (answer, (leader, grandchild)) = tokio::join!(call, stubborn_pids(&pidfile));
    assert!(answer.is_err(), "the task answered: {answer:?}");
    // The service notices the hang-up by itself, some time later: wait for the log to say the
    // run has ended, then check /proc.
    let log = poll(Duration::from_secs(15), || async {
        let log = s.log("stubborn");
        log.contains("failed in").then_some(log)
    })
    .await;
    assert_group_gone(leader, grandchild, "after the run ended");
    assert!(log.contains("cancelled: the client disconnected"), "{log}");
    assert_logged_ending(&log, leader);
}

#[tokio::test]
async fn a_run_refused_file_descriptors_fails_with_a_clear_error() {
    // A hard limit the service cannot raise: a few runs fit, then one cannot get its pipes. Two
    // workers whatever the cores, as each worker's runtime holds descriptors of its own.
    let extra = ["--kill-grace", GRACE, "--workers", "2"];
    let s = Server::start_after("ulimit -n 48", TASKS, &extra);
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

#[tokio::test]
async fn a_run_that_ends_by_itself_ends_what_its_program_left_running() {
    // The run ends when its program has exited: a background job it left is ended with it
    // (issue #18; `detach_children: true` keeps it, see tests/run_control.rs), and the task
    // log says so.
    let s = Server::start(TASKS, &[]);
    let (status, v) = s.post("/sync/runner/background", None).await;
    assert_eq!(status, 200);
    let pid: i32 = v["data"].as_str().unwrap()["started ".len()..]
        .parse()
        .unwrap();
    poll(Duration::from_secs(5), || async {
        process_gone(pid).then_some(())
    })
    .await;
    let log = s.log("background");
    let want = "the program exited leaving 1 process(es) running; ending them";
    assert!(log.contains(want), "{want:?} missing from the log:\n{log}");
}
