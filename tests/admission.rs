//! Whether a run may start, through the real binary: `concurrency_policy` `forbid` and `allow`
//! under concurrent calls, `--max-running` (429 with `Retry-After`), and idempotency keys.
//! (`replace`, which ends the active run, is in `tests/run_end/replace.rs`.)

mod common;

use std::time::Duration;

use common::{concurrent, mark_task, poll, Server};
use serde_json::Value;

#[tokio::test]
async fn forbid_and_allow_under_concurrent_calls() {
    let yaml = [
        mark_task("forbidden", "forbid"),
        mark_task("allowed", "allow"),
    ]
    .concat();
    let s = Server::start(&yaml, &[]);
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
}

#[tokio::test]
async fn past_max_running_new_runs_get_429_with_retry_after() {
    let s = Server::start(&mark_task("m", "allow"), &["--max-running", "2"]);
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
    let s = Server::start(&yaml, &[]);
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
