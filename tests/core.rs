//! The core service through the real binary: every rule of the core issue, over real HTTP with
//! real child processes and real files.

mod common;

use std::time::Duration;

use common::{poll, process_gone, Server};
use serde_json::{json, Value};

const TASKS: &str = r#"
- name: demo1
  cluster_type: TendbCluster
  language: sh
  executable: echo hello
  args: ["aaa", "bbb"]
  collected: false
- name: sh_args
  cluster_type: TendbCluster
  language: sh
  executable: args.sh x1 'x 2'
  args: ["a1", "$CS_TASK_NAME"]
  collected: true
- name: py_args
  cluster_type: sqlsvr
  language: python3
  executable: args.py x1 'x 2'
  args: ["a1", "$HOME"]
  collected: true
- name: python_args
  cluster_type: sqlsvr
  language: python
  executable: args.py x1
  args: ["a1"]
  collected: true
- name: pl_args
  cluster_type: redis
  language: perl
  executable: args.pl x1
  args: ["a1"]
  collected: true
- name: bash_args
  cluster_type: redis
  language: bash
  executable: args.bash x1
  args: ["a1"]
  collected: true
- name: bin_args
  cluster_type: TendbHA
  language: binary
  executable: args.sh x1
  args: ["a1"]
  collected: true
- name: path_echo
  cluster_type: TendbHA
  language: binary
  executable: echo x1
  args: ["a1"]
  collected: false
- name: missing_tool
  cluster_type: TendbHA
  language: binary
  executable: /nonexistent/tool
  collected: false
- name: fail
  cluster_type: Mysql
  language: sh
  executable: fail.sh
  collected: true
- name: silent_fail
  cluster_type: Mysql
  language: sh
  executable: silent_fail.sh
  collected: true
- name: self_kill
  cluster_type: Mysql
  language: binary
  executable: self_kill.sh
  collected: true
- name: lines
  cluster_type: Mysql
  language: sh
  executable: lines.sh
  collected: true
- name: env
  cluster_type: Mysql
  language: sh
  executable: env.sh
  collected: true
- name: stdin
  cluster_type: Mysql
  language: sh
  executable: stdin.sh
  collected: true
- name: sleeper
  cluster_type: Mysql
  language: sh
  executable: sleeper.sh
  collected: true
- name: big
  cluster_type: Mysql
  language: sh
  executable: big_output.sh
  collected: true
- name: closes_pipes_first
  cluster_type: Runner
  language: sh
  executable: "echo before; exec >/dev/null 2>&1; sleep 0.3; exit 3"
  collected: false
- name: grandchild_writes_last
  cluster_type: Runner
  language: sh
  executable: "(sleep 0.3; echo late) & echo early"
  collected: false
- name: pipes_outlive_group
  cluster_type: Runner
  language: sh
  executable: "setsid sleep 4 & echo started"
  collected: false
- name: broken_pipe
  cluster_type: Runner
  language: sh
  executable: "yes | head -n 1"
  collected: false
- name: signal_mask
  cluster_type: Runner
  language: binary
  executable: grep SigBlk /proc/self/status
  collected: false
"#;

fn start() -> Server {
    Server::start(TASKS, &[])
}

async fn sync(s: &Server, path: &str, body: Option<&str>) -> Value {
    let (status, v) = s.post(&format!("/sync/{path}"), body).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

#[tokio::test]
async fn seed_example_answers_the_last_stdout_line() {
    let s = start();
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
    let s = start();
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
    let s = start();
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
    let s = start();
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
    let s = start();
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
async fn async_session_lifecycle() {
    let s = start();
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
    let s = start();
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
async fn kill_ends_the_whole_process_group() {
    let s = start();
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

/// Sends `request` as is on a fresh connection and returns everything the service answers
/// until it closes the connection (or 10 s pass).
fn raw_exchange(s: &Server, request: &str) -> String {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn bad_input_gets_400_and_the_service_keeps_serving() {
    let s = start();
    let cases = [
        (
            "/sync/tendb-cluster/demo1",
            r#"{"a": 1}"#,
            "array of strings",
        ),
        (
            "/sync/tendb-cluster/demo1",
            r#"[1, "x"]"#,
            "element 0 is a number",
        ),
        ("/async/tendb-cluster/demo1", r#"["x""#, "not valid JSON"),
        ("/sync/tendb-ha/counter", r#"{"counter": "x"}"#, "counter"),
        ("/sync/tendb-ha/counter", r#"[]"#, "CounterParams"),
        ("/async/tendb-ha/counter", r#"{"counter": -1}"#, "counter"),
        ("/async/query", r#"{"session_id": 5}"#, "session_id"),
        ("/async/kill", r#"nope"#, "not valid JSON"),
        (
            "/sync/tendb-cluster/demo1",
            r#"["ok", "a\u0000b"]"#,
            "element 1 contains a NUL",
        ),
    ];
    for (path, body, needle) in cases {
        let (status, v) = s.post(path, Some(body)).await;
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert_eq!(v["code"], 1);
        assert_eq!(v["data"], Value::Null);
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{path} {body}: {msg}");
    }
    // One byte over the 1 MiB limit, for both kinds of task route; nothing is run.
    let big = format!("[\"{}\"]", "x".repeat(1024 * 1024 - 3));
    for path in ["/sync/tendb-cluster/demo1", "/async/tendb-cluster/demo1"] {
        let (status, v) = s.post(path, Some(&big)).await;
        assert_eq!((status, v["code"].clone()), (413, json!(1)), "{path}");
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.contains("larger than 1048576 bytes"), "{msg}");
    }
    let (status, v) = s.post("/sync/tendb-cluster/demo1", Some(&big[1..])).await;
    assert_eq!(
        status, 400,
        "exactly 1 MiB is read, and then refused as not JSON: {v}"
    );
    assert!(!s.log("demo1").contains(" start "), "{}", s.log("demo1"));
    // A body that breaks off mid-way (a bad chunk size) cannot be read: 400, not 413.
    let raw = raw_exchange(
        &s,
        "POST /sync/tendb-cluster/demo1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         2\r\n[]\r\nzz\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("cannot read the body"), "{raw}");
    assert!(!s.log("demo1").contains(" start "), "{}", s.log("demo1"));
    let (status, v) = s.post("/sync/nope/nothing", None).await;
    assert_eq!((status, v["code"].clone()), (404, json!(1)));
    let (status, v) = s.get("/no/such/path").await;
    assert_eq!((status, v["code"].clone()), (404, json!(1)));
    let (status, text) = s.get_text("/ping").await;
    assert_eq!((status, text.as_str()), (200, "pong"));
}

#[tokio::test]
async fn list_and_discovery() {
    let s = start();
    let (status, v) = s.get("/list").await;
    assert_eq!(status, 200);
    let routes: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().into(),
                r["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(routes.contains(&("POST".into(), "/sync/tendb-cluster/demo1".into())));
    assert!(routes.contains(&("POST".into(), "/async/tendb-ha/counter".into())));
    assert!(routes.contains(&("POST".into(), "/async/query".into())));
    assert!(routes.contains(&("GET".into(), "/list".into())));
    let (_, again) = s.get("/list").await;
    assert_eq!(v, again, "the order is stable");

    let (_, v) = s.get("/discovery").await;
    let items = v["data"].as_array().unwrap();
    let demo1 = items.iter().find(|i| i["name"] == "demo1").unwrap();
    assert_eq!(
        demo1,
        &json!({"name": "demo1", "cluster_type": "TendbCluster", "url": "tendb-cluster/demo1",
                "empty_param": [], "enable": true, "description": demo1["description"]})
    );
    let counter = items.iter().find(|i| i["name"] == "counter").unwrap();
    assert_eq!(counter["url"], "tendb-ha/counter");
    assert_eq!(counter["empty_param"], json!({"counter": 0}));
}

#[tokio::test]
async fn logs_record_every_line_with_session_and_stream() {
    let s = start();
    let (_, v) = s.post("/async/mysql/fail", None).await;
    let id = v["data"].as_str().unwrap().to_string();
    s.wait_done(&id, Duration::from_secs(20)).await;
    let log = s.log("fail");
    for want in [
        format!("{id} event start /mysql/fail"),
        format!("{id} stdout partial result"),
        format!("{id} stderr warming up"),
        format!("{id} stderr boom: disk full"),
        format!("{id} event failed in"),
    ] {
        assert!(log.contains(&want), "{want:?} missing:\n{log}");
    }
    // Each line starts with an RFC 3339 timestamp.
    let first = log.lines().next().unwrap();
    let stamp = first.split(' ').next().unwrap();
    chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
    let service = std::fs::read_to_string(s.path("logs/celery-service.log")).unwrap();
    assert!(service.contains("listening on"), "{service}");
}

#[tokio::test]
async fn builtin_counter_runs_logs_and_stops_when_killed() {
    let s = start();
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

#[tokio::test]
async fn a_sync_client_that_goes_away_cancels_its_run() {
    let s = start();
    let pidfile = s.path("grandchild.pid");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let res = client
        .post(format!("{}/sync/mysql/sleeper", s.base))
        .body(body)
        .send()
        .await;
    assert!(res.is_err(), "the sleeper answered: {res:?}");
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    poll(Duration::from_secs(15), || async {
        process_gone(grandchild).then_some(())
    })
    .await;
    poll(Duration::from_secs(10), || async {
        s.log("sleeper")
            .contains("cancelled: the client disconnected")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn fifty_megabytes_of_output_do_not_grow_memory() {
    let s = start();
    // Warm up allocator and runtime with a small run first, then measure the peak around the big one.
    sync(&s, "tendb-cluster/demo1", None).await;
    let before = common::proc_status_kib(s.pid(), "VmRSS");
    let v = sync(&s, "mysql/big", None).await;
    assert_eq!(v, json!({"code": 0, "data": "END", "msg": "stderr side"}));
    let peak = common::proc_status_kib(s.pid(), "VmHWM");
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 20,
        "peak RSS grew by {growth_mib} MiB for 50 MB of output"
    );
    // Every line is logged (with its prefix, so past the 64 MiB rotation size: count both files).
    let size = |f: &str| std::fs::metadata(s.path(f)).map(|m| m.len()).unwrap_or(0);
    let logged = size("logs/big.log") + size("logs/big.log.1");
    assert!(logged > 50_000_000, "only {logged} bytes logged");
}

#[tokio::test]
async fn shutdown_kills_running_tasks() {
    let mut s = start();
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
async fn a_run_ends_when_its_process_has_exited_and_its_pipes_are_closed() {
    let s = start();
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
async fn children_start_with_default_signals() {
    // The service ignores SIGPIPE (every Rust program does); a child that inherited that would
    // see `yes` complain about a broken pipe instead of ending quietly.
    let s = start();
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
