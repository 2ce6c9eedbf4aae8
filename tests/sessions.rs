//! Async sessions through the real binary: a session's life from its id to its end, every session
//! newest first, query errors, and retention (finished sessions leave memory and are then
//! answered from the result store; running ones are never removed).

mod common;

use std::time::Duration;

use common::{poll, Server, TASKS};
use serde_json::json;

#[tokio::test]
async fn async_session_lifecycle() {
    let s = Server::start(TASKS, &[]);
    let (status, v) = s.post("/async/tendb-cluster/demo1", Some(r#"["q"]"#)).await;
    assert_eq!(status, 200);
    assert_eq!(v["code"], 0);
    let id = v["data"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    // The session exists as soon as the id is answered.
    let first = s.session(&id).await;
    assert_eq!(first["id"], id.as_str());
    let done = s.wait_done(&id, Duration::from_secs(20)).await;
    assert_eq!(done["message"], "hello aaa bbb q");
    assert_eq!(done["error"], "");
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["task"], "tendb-cluster/demo1");
    assert_eq!(done["args"], json!(["q"]));
    let start_at =
        chrono::DateTime::parse_from_rfc3339(done["start_at"].as_str().unwrap()).unwrap();
    let end_at = chrono::DateTime::parse_from_rfc3339(done["end_at"].as_str().unwrap()).unwrap();
    assert!(end_at >= start_at);

    let (_, v) = s.post("/async/mysql/fail", None).await;
    let failed_id = v["data"].as_str().unwrap().to_string();
    let failed = s.wait_done(&failed_id, Duration::from_secs(20)).await;
    assert_eq!(failed["error"], "boom: disk full");
    assert_eq!(failed["message"], "partial result");
    assert_eq!(failed["exit_code"], 3);

    // No body, and `{}`: every session, newest first.
    for body in [None, Some("{}")] {
        let (status, v) = s.post("/async/query", body).await;
        assert_eq!(status, 200);
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![failed_id.as_str(), id.as_str()]);
    }
}

#[tokio::test]
async fn query_errors() {
    let s = Server::start(TASKS, &[]);
    let (status, v) = s.post("/async/query", None).await;
    assert_eq!(
        (status, v.clone()),
        (200, json!({"code": 0, "data": [], "msg": ""}))
    );
    let unknown = uuid::Uuid::new_v4();
    let (status, v) = s
        .post(
            "/async/query",
            Some(&format!(r#"{{"session_id":"{unknown}"}}"#)),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        json!({"code": 1, "data": null, "msg": format!("session {unknown} not found")})
    );
    let (status, v) = s
        .post("/async/query", Some(r#"{"session_id":"not-a-uuid"}"#))
        .await;
    assert_eq!(status, 400);
    assert!(v["msg"].as_str().unwrap().contains("not-a-uuid"), "{v}");
}

#[tokio::test]
async fn finished_sessions_are_cleaned_after_retention_running_ones_never() {
    let s = Server::start(TASKS, &["--session-retention", "1s"]);
    let pidfile = s.path("grandchild.pid");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    let (_, v) = s.post("/async/mysql/sleeper", Some(&body)).await;
    let running = v["data"].as_str().unwrap().to_string();
    let (_, v) = s.post("/async/tendb-cluster/demo1", None).await;
    let finished = v["data"].as_str().unwrap().to_string();
    let done = s.wait_done(&finished, Duration::from_secs(20)).await;
    assert_eq!(done["message"], "hello aaa bbb");
    // Gone from memory once its retention has passed (the list holds only sessions in
    // memory), and still answered by id, from the result store…
    poll(Duration::from_secs(10), || async {
        let (_, all) = s.post("/async/query", None).await;
        let ids: Vec<&str> = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["id"].as_str())
            .collect();
        (!ids.contains(&finished.as_str())).then_some(())
    })
    .await;
    let stored = s.session(&finished).await;
    assert_eq!(
        (&stored["done"], &stored["message"]),
        (&done["done"], &done["message"])
    );
    let end_at = chrono::DateTime::parse_from_rfc3339(done["end_at"].as_str().unwrap()).unwrap();
    assert!(chrono::Utc::now().signed_duration_since(end_at) >= chrono::TimeDelta::seconds(1));
    // …while the running one, older than the retention, is still there.
    assert_eq!(s.session(&running).await["done"], false);
    s.post(
        "/async/kill",
        Some(&format!(r#"{{"session_id":"{running}"}}"#)),
    )
    .await;
}
