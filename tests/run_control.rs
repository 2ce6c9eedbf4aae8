//! Run control with the real binary: timeouts, nothing left behind (with the cgroup mechanism and
//! with the subreaper fallback), a background child not holding a sync call, overlap policies,
//! `--max-running`, idempotency keys, draining shutdown and a panicking built-in task. Every
//! check of surviving processes reads `/proc`.

mod common;

use std::time::{Duration, Instant};

use common::{poll, process_gone, Server};
use serde_json::Value;

/// Both mechanisms, on every machine (the cgroup one needs root or a delegated cgroup).
const MECHANISMS: [&str; 2] = ["cgroup", "subreaper"];

const ESCAPERS: &str = "
- name: escapers
  cluster_type: RunControl
  language: sh
  executable: escapers.sh
  collected: true
";

/// The pids the escapers fixture wrote to `file`, once it has written all four.
async fn escaped_pids(file: &std::path::Path) -> Vec<i32> {
    poll(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (pids.len() == 4).then_some(pids)
    })
    .await
}

/// Waits until every pid is gone (or a zombie), failing with the survivors' command lines.
async fn all_gone(pids: &[i32], within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| !process_gone(*p)).collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let cmds: Vec<String> = alive
                .iter()
                .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
                .collect();
            // Do not leave them behind for the next test.
            for p in &alive {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &p.to_string()])
                    .status();
            }
            panic!("{what}: still running {alive:?}: {cmds:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(yaml: &str, mechanism: &str, extra: &[&str]) -> Server {
    let mut flags = vec!["--process-tracking", mechanism, "--kill-grace", "1s"];
    flags.extend_from_slice(extra);
    Server::start(yaml, &flags)
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
async fn a_hung_task_is_ended_by_its_timeout_with_its_grandchildren() {
    let yaml = r#"
- name: hang
  cluster_type: RunControl
  language: sh
  executable: 'sh -c "sleep 600 & echo \$! >> \"$PWD/hang.pids\"; sleep 600" & echo $! >> "$PWD/hang.pids"; wait'
  collected: false
  timeout: 1s
- name: hang-default
  cluster_type: RunControl
  language: sh
  executable: 'sleep 600'
  collected: false
"#;
    let s = start(yaml, "auto", &["--default-timeout", "2s"]);
    let began = Instant::now();
    let (_, v) = s.post("/sync/run-control/hang", None).await;
    assert_eq!(v["code"], 1, "{v}");
    assert!(
        v["msg"].as_str().unwrap().starts_with("timed out after 1s"),
        "{v}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    let pids: Vec<i32> = std::fs::read_to_string(s.path("hang.pids"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    all_gone(&pids, Duration::from_secs(3), "timed-out run").await;

    // The service-wide default, in an async session.
    let (_, v) = s.post("/async/run-control/hang-default", None).await;
    let id = v["data"].as_str().unwrap();
    let done = s.wait_done(id, Duration::from_secs(10)).await;
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 2s"),
        "{done}"
    );

    // A built-in task gets the same timeout through its cancellation.
    let (_, v) = s
        .post("/sync/tendb-ha/counter", Some(r#"{"counter": 10}"#))
        .await;
    assert_eq!(v["code"], 1, "{v}");
    assert!(
        v["msg"].as_str().unwrap().starts_with("timed out after 2s"),
        "{v}"
    );
}

fn mark_task(name: &str, policy: &str) -> String {
    format!(
        "
- name: {name}
  cluster_type: RunControl
  language: sh
  executable: mark.sh
  collected: true
  concurrency_policy: {policy}
"
    )
}

/// Fires `n` async calls at once; their statuses and answers.
async fn concurrent(s: &Server, path: &str, body: &str, n: usize) -> Vec<(u16, Value)> {
    futures::future::join_all((0..n).map(|_| s.post(path, Some(body)))).await
}

#[tokio::test]
async fn forbid_replace_and_allow_under_concurrent_calls() {
    let yaml = [
        mark_task("forbidden", "forbid"),
        mark_task("replaced", "replace"),
        mark_task("allowed", "allow"),
    ]
    .concat();
    let s = start(&yaml, "auto", &[]);
    let body = |name: &str| format!(r#"["{}", "600"]"#, s.path(name).display());

    // forbid: one of five concurrent calls starts; the others get 409 naming it.
    let answers = concurrent(&s, "/async/run-control/forbidden", &body("forbidden"), 5).await;
    let started: Vec<&Value> = answers
        .iter()
        .filter(|(st, _)| *st == 200)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(started.len(), 1, "{answers:?}");
    let running = started[0]["data"].as_str().unwrap();
    for (status, v) in answers.iter().filter(|(st, _)| *st != 200) {
        assert_eq!(*status, 409, "{v}");
        assert_eq!(
            (v["code"].as_i64(), &v["data"]),
            (Some(1), &Value::Null),
            "{v}"
        );
        assert!(v["msg"].as_str().unwrap().contains(running), "{v}");
    }
    // A sync call is refused the same way.
    let (status, _) = s
        .post("/sync/run-control/forbidden", Some(&body("forbidden")))
        .await;
    assert_eq!(status, 409);

    // allow: five concurrent calls, five runs.
    let answers = concurrent(&s, "/async/run-control/allowed", &body("allowed"), 5).await;
    assert!(answers.iter().all(|(st, _)| *st == 200), "{answers:?}");
    let runs = poll(Duration::from_secs(5), || async {
        let n = std::fs::read_to_string(s.path("allowed"))
            .unwrap_or_default()
            .lines()
            .count();
        (n == 5).then_some(n)
    })
    .await;
    assert_eq!(runs, 5);

    // replace: five concurrent calls all start; in the end one runs, and every other session
    // says which run replaced it, its processes gone.
    let answers = concurrent(&s, "/async/run-control/replaced", &body("replaced"), 5).await;
    assert!(answers.iter().all(|(st, _)| *st == 200), "{answers:?}");
    let ids: Vec<String> = answers
        .iter()
        .map(|(_, v)| v["data"].as_str().unwrap().to_string())
        .collect();
    let mut ended = 0;
    for id in &ids {
        let state = poll(Duration::from_secs(15), || async {
            let st = s.session(id).await;
            let error = st["error"].as_str().unwrap_or_default().to_string();
            (st["done"] == true || ids.iter().any(|_| error.is_empty())).then_some(st)
        })
        .await;
        if state["done"] == true {
            ended += 1;
            let error = state["error"].as_str().unwrap();
            let by = error
                .strip_prefix("replaced by ")
                .unwrap_or_else(|| panic!("{state}"));
            assert!(ids.iter().any(|i| i == by), "{state}");
        }
    }
    let still = poll(Duration::from_secs(15), || async {
        let mut running = 0;
        for id in &ids {
            if s.session(id).await["done"] == false {
                running += 1;
            }
        }
        (running == 1).then_some(running)
    })
    .await;
    assert_eq!(still, 1, "ended {ended}");
    // Only the surviving run's processes are left: every other run's sleep is gone.
    let marked = marked_processes(&ids);
    assert_eq!(marked.len(), 1, "{marked:?}");
}

/// The sessions among `ids` that still have a running process, read from each process's
/// environment in `/proc` (every run's processes carry `CS_SESSION_ID`).
fn marked_processes(ids: &[String]) -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if process_gone(pid) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for id in ids {
            let needle = format!("CS_SESSION_ID={id}");
            if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                found.insert(id.clone());
            }
        }
    }
    found.into_iter().collect()
}

#[tokio::test]
async fn past_max_running_new_runs_get_429_with_retry_after() {
    let s = start(&mark_task("m", "allow"), "auto", &["--max-running", "2"]);
    let body = format!(r#"["{}", "600"]"#, s.path("m").display());
    for _ in 0..2 {
        let (status, _) = s.post("/async/run-control/m", Some(&body)).await;
        assert_eq!(status, 200);
    }
    let resp = s
        .http
        .post(format!("{}/sync/run-control/m", s.base))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["code"].as_i64(), &v["data"]),
        (Some(1), &Value::Null),
        "{v}"
    );
    assert!(v["msg"].as_str().unwrap().contains("--max-running"), "{v}");
    let (_, cfg) = s.get("/-/config").await;
    assert_eq!(cfg["data"]["run_control"]["max_running"], 2, "{cfg}");
}

#[tokio::test]
async fn two_async_calls_with_one_idempotency_key_give_one_run() {
    let yaml = [mark_task("once", "allow"), mark_task("other", "allow")].concat();
    let s = start(&yaml, "auto", &[]);
    let body = format!(r#"["{}", "1"]"#, s.path("once").display());
    let send = || {
        s.http
            .post(format!("{}/async/run-control/once", s.base))
            .header("Idempotency-Key", "run-control/once@2026-12-03T10:00")
            .body(body.clone())
            .send()
    };
    let (a, b) = tokio::join!(send(), send());
    let a: Value = a.unwrap().json().await.unwrap();
    let b: Value = b.unwrap().json().await.unwrap();
    assert_eq!(a["code"], 0, "{a}");
    assert_eq!(a["data"], b["data"], "{a} {b}");
    s.wait_done(a["data"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    let runs = std::fs::read_to_string(s.path("once")).unwrap();
    assert_eq!(runs.lines().count(), 1, "{runs}");

    // The same key for another task: 422.
    let resp = s
        .http
        .post(format!("{}/async/run-control/other", s.base))
        .header("Idempotency-Key", "run-control/once@2026-12-03T10:00")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["msg"].as_str().unwrap().contains("run-control/once"),
        "{v}"
    );
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
