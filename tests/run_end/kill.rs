//! A kill request (`POST /async/kill`): SIGTERM to the run's process group, SIGKILL after the
//! grace, and the answer only once every process of the run is gone; escaped descendants too,
//! with either mechanism; a built-in task stops through its cancellation.

use std::time::Duration;

use serde_json::json;

use crate::common::{poll, process_gone, sync, Server, TASKS};
use crate::{
    all_gone, assert_group_gone, assert_logged_ending, escaped_pids, start, stubborn_pids,
    ESCAPERS, GRACE, MECHANISMS, STUBBORN_TASKS,
};

#[tokio::test]
async fn kill_ends_the_whole_process_group() {
    let s = Server::start(TASKS, &[]);
    let pidfile = s.path("grandchild.pid");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    let (_, v) = s.post("/async/mysql/sleeper", Some(&body)).await;
    let id = v["data"].as_str().unwrap().to_string();
    let grandchild: i32 = poll(Duration::from_secs(20), || async {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
    .await;
    assert!(!process_gone(grandchild));
    // A running session shows its latest stdout line as its message.
    let running = poll(Duration::from_secs(10), || async {
        let v = s.session(&id).await;
        (v["message"] == format!("started {grandchild}")).then_some(v)
    })
    .await;
    assert_eq!(running["done"], false);
    // A long run's records reach its log while it runs, not only when it ends.
    poll(Duration::from_secs(10), || async {
        let log = s.log("sleeper");
        (log.contains(&format!("{id} event start /mysql/sleeper"))
            && log.contains(&format!("{id} stdout started {grandchild}")))
        .then_some(())
    })
    .await;

    let (status, v) = s
        .post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["done"], true, "{v}");
    let err = v["data"]["error"].as_str().unwrap();
    assert!(err.contains("killed"), "{err}");
    poll(Duration::from_secs(10), || async {
        process_gone(grandchild).then_some(())
    })
    .await;
    // It stays queryable.
    let after = s.session(&id).await;
    assert_eq!(after["done"], true);
    assert!(
        s.log("sleeper").contains("failed in"),
        "{}",
        s.log("sleeper")
    );

    let unknown = uuid::Uuid::new_v4();
    let (status, v) = s
        .post(
            "/async/kill",
            Some(&format!(r#"{{"session_id":"{unknown}"}}"#)),
        )
        .await;
    assert_eq!((status, v["code"].clone()), (404, json!(1)));
    for body in [None, Some("{}"), Some(r#"{"session":"x"}"#)] {
        let (status, v) = s.post("/async/kill", body).await;
        assert_eq!(status, 400, "{body:?}: {v}");
        assert_eq!(v["code"], 1);
    }
}

#[tokio::test]
async fn kill_ends_a_grandchild_that_ignores_sigterm_before_answering() {
    let s = Server::start(STUBBORN_TASKS, &["--kill-grace", GRACE]);
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
    // The kill's answer is the session as every later query shows it, end time included.
    assert_eq!(s.session(&id).await, v["data"]);
    assert_logged_ending(&s.log("stubborn"), leader);
}

#[tokio::test]
async fn escaped_descendants_are_gone_after_a_kill_with_either_mechanism() {
    for mech in MECHANISMS {
        let s = start(ESCAPERS, mech, &[]);
        let file = s.path("pids");
        let body = format!(r#"["{}", "600"]"#, file.display());
        let (_, v) = s.post("/async/run-control/escapers", Some(&body)).await;
        let id = v["data"].as_str().unwrap().to_string();
        let pids = escaped_pids(&file).await;
        let (status, killed) = s
            .post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
            .await;
        assert_eq!(status, 200, "{killed}");
        assert_eq!(killed["data"]["done"], true, "{mech}: {killed}");
        all_gone(&pids, Duration::from_secs(3), &format!("{mech}, kill")).await;
    }
}

#[tokio::test]
async fn builtin_counter_runs_logs_and_stops_when_killed() {
    let s = Server::start(TASKS, &[]);
    let v = sync(&s, "tendb-ha/counter", Some(r#"{"counter": 1}"#)).await;
    assert_eq!(v, json!({"code": 0, "data": "hello world", "msg": ""}));
    assert!(s.log("counter").contains("stdout counter 1/1"));

    let (_, v) = s
        .post("/async/tendb-ha/counter", Some(r#"{"counter": 600}"#))
        .await;
    let id = v["data"].as_str().unwrap().to_string();
    poll(Duration::from_secs(10), || async {
        s.log("counter")
            .contains(&format!("{id} stdout counter 1/600"))
            .then_some(())
    })
    .await;
    let running = s.session(&id).await;
    assert_eq!(running["done"], false);
    let message = running["message"].as_str().unwrap();
    assert!(message.starts_with("counter "), "{running}");
    let (status, v) = s
        .post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["done"], true, "{v}");
    assert!(
        v["data"]["error"].as_str().unwrap().contains("killed"),
        "{v}"
    );
    assert_eq!(v["data"]["args"], json!({"counter": 600}));
}
