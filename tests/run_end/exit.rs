//! A run that ends by itself: its exit status is found whatever its pipes do, what its program left
//! running is ended with it (unless `detach_children`), a background child holding stdout does
//! not hold a sync call, and a built-in task that panics fails its own run only.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{poll, process_gone, sync, Server, TASKS};
use crate::{all_gone, escaped_pids, start, ESCAPERS, MECHANISMS, STUBBORN_TASKS};

#[tokio::test]
async fn a_run_ends_when_its_process_has_exited_and_its_pipes_are_closed() {
    let s = Server::start(TASKS, &[]);
    // Pipes closed long before the exit: the exit status is still found.
    let v = sync(&s, "runner/closes-pipes-first", None).await;
    assert_eq!(
        v,
        json!({"code": 1, "data": "before", "msg": "exited with code 3"})
    );
    // The leader exits at once, a grandchild in its group would write later: the run answers
    // with what the leader printed, and the grandchild is ended (issue #18).
    let v = sync(&s, "runner/grandchild-writes-last", None).await;
    assert_eq!(v, json!({"code": 0, "data": "early", "msg": ""}));
    // A process outside the group holds the pipes: it is ended with the run, no drain wait.
    let v = sync(&s, "runner/pipes-outlive-group", None).await;
    assert_eq!(v, json!({"code": 0, "data": "started", "msg": ""}));
    let log = s.log("pipes_outlive_group");
    assert!(
        log.contains("the program exited leaving 1 process(es) running; ending them"),
        "{log}"
    );
}

#[tokio::test]
async fn a_run_that_ends_by_itself_ends_what_its_program_left_running() {
    // The run ends when its program has exited: a background job it left is ended with it
    // (issue #18; `detach_children: true` keeps it, see
    // `a_background_child_holding_stdout_does_not_hold_a_sync_call`), and the task log says so.
    let s = Server::start(STUBBORN_TASKS, &[]);
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

#[tokio::test]
async fn escaped_descendants_are_gone_after_a_normal_end_with_either_mechanism() {
    for mech in MECHANISMS {
        let s = start(ESCAPERS, mech, &[]);
        let (_, cfg) = s.get("/-/config").await;
        assert_eq!(
            cfg["data"]["run_control"]["process_tracking"], mech,
            "{cfg}"
        );
        let file = s.path("pids");
        let body = format!(r#"["{}", "0"]"#, file.display());
        let (status, v) = s.post("/sync/run-control/escapers", Some(&body)).await;
        assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{mech}: {v}");
        assert_eq!(v["data"], "done", "{mech}: {v}");
        let pids = escaped_pids(&file).await;
        all_gone(
            &pids,
            Duration::from_secs(5),
            &format!("{mech}, normal end"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hold_a_sync_call() {
    let yaml = r#"
- name: quick
  cluster_type: RunControl
  language: sh
  executable: 'sleep 600 & echo $! > "$PWD/bg.pid"; echo quick'
  collected: false
- name: daemon
  cluster_type: RunControl
  language: sh
  executable: 'sleep 600 & echo $! > "$PWD/daemon.pid"; echo started'
  collected: false
  detach_children: true
"#;
    for mech in MECHANISMS {
        let s = start(yaml, mech, &[]);
        let began = Instant::now();
        let (_, v) = s.post("/sync/run-control/quick", None).await;
        let took = began.elapsed();
        assert_eq!(
            (v["code"].as_i64(), v["data"].as_str()),
            (Some(0), Some("quick")),
            "{v}"
        );
        // Before, the call waited 2 s for the pipe the sleep held.
        assert!(took < Duration::from_millis(1500), "{mech}: took {took:?}");
        let pid: i32 = std::fs::read_to_string(s.path("bg.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        all_gone(
            &[pid],
            Duration::from_secs(2),
            &format!("{mech}, background sleep"),
        )
        .await;

        // detach_children: the daemon is left running, and the call does not wait for it.
        let began = Instant::now();
        let (_, v) = s.post("/sync/run-control/daemon", None).await;
        assert_eq!(v["data"], "started", "{v}");
        assert!(began.elapsed() < Duration::from_millis(1500), "{mech}");
        let pid: i32 = std::fs::read_to_string(s.path("daemon.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!process_gone(pid), "{mech}: the detached daemon was ended");
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
}

#[tokio::test]
async fn a_panicking_builtin_task_fails_its_session_and_the_service_serves_on() {
    let s = Server::start("", &[]);
    let (_, v) = s
        .post(
            "/async/tendb-ha/counter",
            Some(r#"{"counter": 3, "panic_at": 1}"#),
        )
        .await;
    let id = v["data"].as_str().unwrap();
    let done = s.wait_done(id, Duration::from_secs(10)).await;
    assert_eq!(
        done["error"], "the task panicked: counter told to panic at step 1",
        "{done}"
    );
    let (_, v) = s
        .post(
            "/sync/tendb-ha/counter",
            Some(r#"{"counter": 1, "panic_at": 1}"#),
        )
        .await;
    assert_eq!(v["code"], 1, "{v}");
    let (_, v) = s
        .post("/sync/tendb-ha/counter", Some(r#"{"counter": 0}"#))
        .await;
    assert_eq!(v["data"], "hello world", "{v}");
    assert!(
        s.log("counter").contains("panicked: counter told to panic"),
        "{}",
        s.log("counter")
    );
}
