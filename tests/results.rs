//! The result store end to end: the real binary, real runs, and the records read straight from
//! the database: the embedded SQLite file, or FerretDB (MongoDB wire protocol) with the
//! official `mongodb` crate.

mod common;
#[path = "common/ferretdb.rs"]
mod ferretdb;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{poll, Server};
use ferretdb::Ferret;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};

const YAML: &str = r#"
- name: echo
  cluster_type: Store
  language: sh
  executable: echo
  collected: false
- name: fail
  cluster_type: Store
  language: sh
  executable: fail.sh
  collected: true
- name: sleep
  cluster_type: Store
  language: sh
  executable: sleep 30
  collected: false
- name: env
  cluster_type: Store
  language: sh
  executable: result_env.sh
  collected: true
"#;

const T: Duration = Duration::from_secs(20);

/// Where a test reads records from.
enum Db {
    Sqlite(PathBuf),
    Mongo(mongodb::Collection<Document>),
}

impl Db {
    async fn query(&self, field: &str, value: &str) -> Vec<Value> {
        match self {
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let column = if field == "session_id" {
                    "session_id"
                } else {
                    "path"
                };
                let mut stmt = conn
                    .prepare(&format!("SELECT doc FROM results WHERE {column} = ?1"))
                    .unwrap();
                let rows = stmt
                    .query_map([value], |row| row.get::<_, String>(0))
                    .unwrap();
                rows.map(|d| serde_json::from_str(&d.unwrap()).unwrap())
                    .collect()
            }
            Db::Mongo(results) => {
                let mut cursor = results.find(doc! {field: value}).await.unwrap();
                let mut out = Vec::new();
                while cursor.advance().await.unwrap() {
                    let d = cursor.deserialize_current().unwrap();
                    out.push(mongodb::bson::from_document::<Value>(d).unwrap());
                }
                out
            }
        }
    }

    /// The record of `id` once it is done.
    async fn ended(&self, id: &str) -> Value {
        poll(T, || async {
            let mut found = self.query("session_id", id).await;
            assert!(found.len() <= 1, "two records of {id}: {found:?}");
            found.pop().filter(|r| r["done"] == true)
        })
        .await
    }

    /// The ended records of a task path, once there are `n`.
    async fn ended_of(&self, path: &str, n: usize) -> Vec<Value> {
        poll(T, || async {
            let found = self.query("path", path).await;
            let done = found.iter().filter(|r| r["done"] == true).count();
            assert!(
                found.len() <= n,
                "more than {n} records of {path}: {found:?}"
            );
            (done == n).then_some(found)
        })
        .await
    }
}

/// Runs one of each kind (sync, async, failed, killed, built-in) and checks each record.
async fn every_kind_of_run_has_its_record(s: &Server, db: &Db) {
    let (_, v) = s.post("/sync/store/echo", Some(r#"["hi"]"#)).await;
    assert_eq!(v["data"], "hi", "{v}");
    let (_, v) = s.post("/async/store/echo", Some(r#"["later"]"#)).await;
    let async_id = v["data"].as_str().unwrap().to_string();
    s.wait_done(&async_id, T).await;
    let (_, v) = s.post("/sync/store/fail", None).await;
    assert_eq!(v["code"], 1, "{v}");
    let (_, v) = s.post("/async/store/sleep", None).await;
    let killed_id = v["data"].as_str().unwrap().to_string();
    let (status, v) = s
        .post(
            "/async/kill",
            Some(&format!(r#"{{"session_id":"{killed_id}"}}"#)),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = s
        .post("/sync/tendb-ha/counter", Some(r#"{"counter": 0}"#))
        .await;
    assert_eq!(v["code"], 0, "{v}");

    let echoes = db.ended_of("store/echo", 2).await;
    let sync = echoes
        .iter()
        .find(|r| r["mode"] == "sync")
        .expect("sync record");
    for (field, want) in [
        ("task", json!("echo")),
        ("cluster_type", json!("Store")),
        ("status", json!("ok")),
        ("args", json!(["hi"])),
        ("command", json!("sh -c 'echo hi'")),
        ("stdout_last", json!("hi")),
        ("stderr_last", json!("")),
        ("error", json!("")),
        ("exit_code", json!(0)),
        ("version", json!(env!("CARGO_PKG_VERSION"))),
    ] {
        assert_eq!(sync[field], want, "{field} of {sync}");
    }
    assert!(
        sync["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{sync}"
    );
    assert!(
        sync["end_ms"].as_i64() >= sync["start_ms"].as_i64(),
        "{sync}"
    );
    assert!(sync["duration_ms"].as_i64().is_some(), "{sync}");

    let a = db.ended(&async_id).await;
    assert_eq!((&a["mode"], &a["status"]), (&json!("async"), &json!("ok")));
    assert_eq!(a["stdout_last"], "later");

    let failed = &db.ended_of("store/fail", 1).await[0];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["stdout_last"], "partial result");
    assert_eq!(failed["stderr_last"], "boom: disk full");
    assert_eq!(failed["error"], "boom: disk full");

    let k = db.ended(&killed_id).await;
    assert_eq!(k["status"], "killed", "{k}");
    assert!(
        k["error"]
            .as_str()
            .unwrap()
            .starts_with("killed on request"),
        "{k}"
    );
    assert_eq!(k["signal"], 15, "{k}");

    let b = &db.ended_of("tendb-ha/counter", 1).await[0];
    assert_eq!(b["status"], "ok", "{b}");
    assert_eq!(b["stdout_last"], "hello world");
    assert_eq!(b["command"], "builtin /tendb-ha/counter");
    assert_eq!(b["args"], json!({"counter": 0}));

    // The history endpoint reads the same records, newest first, page by page.
    let (status, v) = s.get("/results?task=store/echo&limit=1").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["records"][0]["session_id"], async_id.as_str());
    let next = v["data"]["next"].as_str().unwrap().to_string();
    let (_, v) = s
        .get(&format!("/results?task=store/echo&limit=1&before={next}"))
        .await;
    assert_eq!(v["data"]["records"][0]["mode"], "sync", "{v}");
    let (_, v) = s.get("/results?status=killed").await;
    assert_eq!(
        v["data"]["records"][0]["session_id"],
        killed_id.as_str(),
        "{v}"
    );
    let (status, _) = s.get("/results?limit=0").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn embedded_store_keeps_every_kind_of_run() {
    let s = Server::start(YAML, &[]);
    let db = Db::Sqlite(s.path("results.sqlite3"));
    every_kind_of_run_has_its_record(&s, &db).await;
    let (_, v) = s.post("/sync/store/env", None).await;
    let file = s.path("results.sqlite3");
    assert_eq!(
        v["data"],
        format!("db=celery_service uri=file:{}", file.display())
    );
}

#[tokio::test]
async fn with_no_result_store_nothing_is_written_and_sessions_live_in_memory() {
    let s = Server::start(YAML, &["--no-result-store"]);
    let (status, v) = s.post("/sync/store/echo", Some(r#"["hi"]"#)).await;
    assert_eq!((status, v["data"].as_str()), (200, Some("hi")), "{v}");
    let (_, v) = s.post("/async/store/echo", Some(r#"["there"]"#)).await;
    let id = v["data"].as_str().unwrap().to_string();
    let query = format!(r#"{{"session_id":"{id}"}}"#);
    poll(T, || async {
        let (_, v) = s.post("/async/query", Some(&query)).await;
        (v["data"][0]["done"] == true).then_some(())
    })
    .await;
    // No file was made, and scripts get no URI.
    assert!(!s.path("results.sqlite3").exists());
    let (_, v) = s.post("/sync/store/env", None).await;
    assert_eq!(v["data"], "db=celery_service uri=", "{v}");
    let (_, v) = s.get("/-/store").await;
    assert_eq!(
        (v["data"]["backend"].as_str(), v["data"]["state"].as_str()),
        (Some("off"), Some("off")),
        "{v}"
    );
    // A session not in memory is simply not found (as with the original service), history is
    // refused naming the flag, and the service is ready.
    let unknown = r#"{"session_id":"00000000-0000-4000-8000-000000000000"}"#;
    let (status, _) = s.post("/async/query", Some(unknown)).await;
    assert_eq!(status, 404);
    let (status, v) = s.get("/results").await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("--no-result-store"),
        "{v}"
    );
    let (status, v) = s.get("/readyz").await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn ferretdb_store_keeps_every_kind_of_run_and_scripts_get_the_uri() {
    let data = tempfile::tempdir().unwrap();
    let ferret = Ferret::start(data.path());
    let s = Server::start(
        YAML,
        &["--db-address", &ferret.address(), "--db-name", "cs_kinds"],
    );
    let results = ferret.results("cs_kinds").await;
    every_kind_of_run_has_its_record(&s, &Db::Mongo(results.clone())).await;
    let (_, v) = s.post("/sync/store/env", None).await;
    assert_eq!(
        v["data"],
        format!("db=cs_kinds uri=mongodb://{}/", ferret.address())
    );
    let indexes = results.list_index_names().await.unwrap();
    assert!(
        indexes.iter().any(|i| i.contains("session_id")),
        "{indexes:?}"
    );
    assert!(
        indexes
            .iter()
            .any(|i| i.contains("path") && i.contains("start_ms")),
        "{indexes:?}"
    );
    let (_, v) = s.get("/-/store").await;
    assert_eq!(v["data"]["backend"], "mongodb");
    assert_eq!(v["data"]["state"], "connected", "{v}");
}

#[tokio::test]
async fn a_session_is_answered_from_the_store_after_a_restart() {
    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("results.sqlite3");
    let file_flag = file.to_str().unwrap();
    let mut first = Server::start(YAML, &["--result-db-file", file_flag]);
    let (_, v) = first.post("/async/store/echo", Some(r#"["kept"]"#)).await;
    let id = v["data"].as_str().unwrap().to_string();
    let live = first.wait_done(&id, T).await;
    first.stop();
    let second = Server::start(YAML, &["--result-db-file", file_flag]);
    let stored = second.session(&id).await;
    for field in [
        "id",
        "message",
        "error",
        "done",
        "exit_code",
        "task",
        "args",
    ] {
        assert_eq!(stored[field], live[field], "{field}: {stored} vs {live}");
    }
    let (status, _) = second
        .post(
            "/async/query",
            Some(&format!(r#"{{"session_id":"{}"}}"#, uuid::Uuid::new_v4())),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn database_killed_mid_burst_every_record_arrives_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let mut ferret = Ferret::start(data.path());
    let port = ferret.port;
    let s = Server::start(
        YAML,
        &["--db-address", &ferret.address(), "--db-name", "cs_burst"],
    );
    const N: usize = 60;
    let burst = |from: usize, to: usize| {
        let s = &s;
        async move {
            let calls = (from..to).map(|i| async move {
                let (status, v) = s
                    .post("/sync/store/echo", Some(&format!(r#"["{i}"]"#)))
                    .await;
                assert_eq!((status, &v["data"]), (200, &json!(i.to_string())), "{v}");
            });
            for call in calls.collect::<Vec<_>>() {
                call.await;
            }
        }
    };
    let first = tokio::spawn({
        let base = s.base.clone();
        async move {
            let http = reqwest::Client::new();
            for i in 0..N / 2 {
                let v: Value = http
                    .post(format!("{base}/sync/store/echo"))
                    .body(format!(r#"["{i}"]"#))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(v["data"], i.to_string(), "{v}");
            }
        }
    });
    // Kill the database while the first half runs; the requests never notice.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ferret.kill();
    first.await.unwrap();
    burst(N / 2, N).await;
    // The writer notices when a write fails: after its group-commit wait and the driver's
    // timeout, not at once.
    poll(T, || async {
        let (_, v) = s.get("/-/store").await;
        (v["data"]["state"] == "spooling").then_some(())
    })
    .await;
    let ferret = Ferret::start_on(data.path(), port);
    poll(Duration::from_secs(30), || async {
        let (_, v) = s.get("/-/store").await;
        let d = &v["data"];
        (d["state"] == "connected" && d["spool_size"] == 0 && d["queue_depth"] == 0).then_some(())
    })
    .await;
    let results = ferret.results("cs_burst").await;
    let records = Db::Mongo(results.clone()).ended_of("store/echo", N).await;
    let mut outputs: Vec<usize> = records
        .iter()
        .map(|r| r["stdout_last"].as_str().unwrap().parse().unwrap())
        .collect();
    outputs.sort_unstable();
    assert_eq!(outputs, (0..N).collect::<Vec<_>>(), "every run once");
    assert_eq!(results.count_documents(doc! {}).await.unwrap(), N as u64);
}

#[tokio::test]
async fn replicas_answer_and_kill_each_others_sessions_and_mark_dead_ones_lost() {
    let data = tempfile::tempdir().unwrap();
    let ferret = Ferret::start(data.path());
    let flags = [
        "--db-address",
        &ferret.address(),
        "--db-name",
        "cs_replicas",
        "--replica-timeout",
        "2s",
    ];
    let mut a = Server::start(YAML, &flags);
    let b = Server::start(YAML, &flags);

    let (_, v) = a.post("/async/store/sleep", None).await;
    let id = v["data"].as_str().unwrap().to_string();
    let seen = poll(T, || async {
        let (status, v) = b
            .post("/async/query", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
            .await;
        (status == 200).then(|| v["data"][0].clone())
    })
    .await;
    assert_eq!(
        (&seen["done"], &seen["task"]),
        (&json!(false), &json!("store/sleep"))
    );

    let asked = Instant::now();
    let (status, v) = b
        .post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["done"], true, "{v}");
    assert!(
        v["data"]["error"]
            .as_str()
            .unwrap()
            .starts_with("killed on request"),
        "{v}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "took {:?}",
        asked.elapsed()
    );
    let on_a = a.session(&id).await;
    assert_eq!(on_a["done"], true);

    // A replica that dies leaves its running record to be marked lost by the other.
    let (_, v) = a.post("/async/store/sleep", None).await;
    let orphan = v["data"].as_str().unwrap().to_string();
    poll(T, || async {
        let (status, _) = b
            .post(
                "/async/query",
                Some(&format!(r#"{{"session_id":"{orphan}"}}"#)),
            )
            .await;
        (status == 200).then_some(())
    })
    .await;
    a.signal(9);
    a.stop();
    let lost = b.wait_done(&orphan, T).await;
    assert!(
        lost["error"].as_str().unwrap().starts_with("lost"),
        "{lost}"
    );
    let record = Db::Mongo(ferret.results("cs_replicas").await)
        .ended(&orphan)
        .await;
    assert_eq!(record["status"], "lost");
}

#[tokio::test]
async fn the_password_never_appears_in_logs_or_answers() {
    const PASSWORD: &str = "Sup3r-S3cret/pw";
    let data = tempfile::tempdir().unwrap();
    let ferret = Ferret::start(data.path());
    let address = ferret.address();
    let mut s = Server::start_with(
        YAML,
        &["--db-address", &address, "--db-user", "dbuser"],
        |cmd| {
            cmd.env("CS_DB_PASSWORD", PASSWORD);
        },
    );
    let mut answers = String::new();
    let (_, v) = s.post("/sync/store/env", None).await;
    assert_eq!(
        v["data"],
        format!("db=celery_service uri=mongodb://dbuser:<pw>@{address}/")
    );
    answers.push_str(&v.to_string());
    let (_, v) = s.post("/sync/store/fail", None).await;
    answers.push_str(&v.to_string());
    // Whether FerretDB accepts the login or not, the store's state and errors are shown.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/-/store", "/-/config", "/results", "/openapi.json"] {
        answers.push_str(&s.get_text(path).await.1);
    }
    answers.push_str(&s.post("/async/query", None).await.1.to_string());
    s.stop();
    let encoded = "Sup3r%2DS3cret%2Fpw";
    for hay in [answers.as_str(), s.stdout.lock().unwrap().as_str()] {
        assert!(!hay.contains(PASSWORD) && !hay.contains(encoded), "{hay}");
    }
    for entry in std::fs::read_dir(s.path("logs")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            !text.contains(PASSWORD) && !text.contains(encoded),
            "{text}"
        );
    }
    assert!(
        s.stdout.lock().unwrap().contains("dbuser:***@"),
        "the redacted URI is logged"
    );
}
