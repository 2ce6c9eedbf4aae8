//! The service shutting down (SIGTERM or SIGINT): new runs are refused while active ones may
//! finish for `--shutdown-timeout`, the rest are ended as a kill ends them, a second signal cuts
//! the wait short, and no process of any run outlives the service.

use std::time::{Duration, Instant};

use crate::common::{mark_task, poll, process_gone, Server, TASKS};
use crate::{
    all_gone, assert_group_gone, assert_logged_ending, escaped_pids, start, stubborn_pids,
    ESCAPERS, GRACE, MECHANISMS, STUBBORN_TASKS,
};

#[tokio::test]
async fn shutdown_kills_running_tasks() {
    let mut s = Server::start(TASKS, &[]);
    let pidfile = s.path("grandchild.pid");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    s.post("/async/mysql/sleeper", Some(&body)).await;
    let grandchild: i32 = poll(Duration::from_secs(20), || async {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
    .await;
    let status = s.stop();
    assert!(status.success(), "{status}");
    assert!(process_gone(grandchild), "a task outlived the service");
}

#[tokio::test]
async fn shutdown_ends_a_grandchild_that_ignores_sigterm_before_exiting() {
    let mut s = Server::start(STUBBORN_TASKS, &["--kill-grace", GRACE]);
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
async fn escaped_descendants_are_gone_after_shutdown_with_either_mechanism() {
    for mech in MECHANISMS {
        let mut s = start(ESCAPERS, mech, &["--shutdown-timeout", "1s"]);
        let file = s.path("pids");
        let body = format!(r#"["{}", "600"]"#, file.display());
        s.post("/async/run-control/escapers", Some(&body)).await;
        let pids = escaped_pids(&file).await;
        let status = s.stop();
        assert!(status.success(), "{mech}: {status}");
        all_gone(&pids, Duration::from_secs(2), &format!("{mech}, shutdown")).await;
        assert!(
            s.log("escapers").contains("stopped: the service shut down"),
            "{}",
            s.log("escapers")
        );
    }
}

#[tokio::test]
async fn sigterm_lets_the_short_run_finish_and_ends_the_long_one() {
    let yaml = [mark_task("short", "allow"), ESCAPERS.to_string()].concat();
    let mut s = start(&yaml, "auto", &["--shutdown-timeout", "3s"]);
    let pids_file = s.path("pids");
    s.post(
        "/async/run-control/escapers",
        Some(&format!(r#"["{}", "600"]"#, pids_file.display())),
    )
    .await;
    let (_, v) = s
        .post(
            "/async/run-control/short",
            Some(&format!(r#"["{}", "1"]"#, s.path("short").display())),
        )
        .await;
    assert_eq!(v["code"], 0);
    let pids = escaped_pids(&pids_file).await;
    let began = Instant::now();
    s.signal(15);
    // Draining: new runs are refused at once, other calls are still answered.
    let (status, v) = poll(Duration::from_secs(2), || async {
        let (st, v) = s
            .post("/sync/run-control/short", Some(r#"["/dev/null", "0"]"#))
            .await;
        (st == 503).then_some((st, v))
    })
    .await;
    assert_eq!(status, 503);
    assert!(v["msg"].as_str().unwrap().contains("shutting down"), "{v}");
    let status = s
        .wait_exit(Duration::from_secs(15))
        .expect("the service exits");
    assert!(status.success(), "{status}");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
    all_gone(&pids, Duration::from_secs(2), "after shutdown").await;
    assert!(s.log("short").contains("done in"), "{}", s.log("short"));
    assert!(
        s.log("escapers").contains("stopped: the service shut down"),
        "{}",
        s.log("escapers")
    );
}

#[tokio::test]
async fn a_second_signal_ends_the_shutdown_wait_at_once() {
    let mut s = start(ESCAPERS, "auto", &["--shutdown-timeout", "60s"]);
    let file = s.path("pids");
    s.post(
        "/async/run-control/escapers",
        Some(&format!(r#"["{}", "600"]"#, file.display())),
    )
    .await;
    let pids = escaped_pids(&file).await;
    let began = Instant::now();
    s.signal(15);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.signal(2);
    let status = s.stop();
    assert!(status.success(), "{status}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    all_gone(&pids, Duration::from_secs(2), "after two signals").await;
}
