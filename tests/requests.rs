//! What a request may carry and what the service lists, through the real binary: bad bodies and
//! unknown routes get a clear 4xx while the service keeps serving, and `/list` and `/discovery`
//! show every route and task.

mod common;

use std::time::Duration;

use common::{Server, TASKS};
use serde_json::{json, Value};

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
    let s = Server::start(TASKS, &[]);
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
    let s = Server::start(TASKS, &[]);
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

/// Reads one HTTP/1.1 response (headers and a `content-length` body) from `conn`; its status.
fn read_response(conn: &mut std::net::TcpStream) -> Option<u16> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_call_to_an_unknown_task_with_a_body_keeps_the_connection_usable() {
    // A Celery worker reuses its pooled connection: the call after a 404 (a task removed by a
    // reload) must reach the service, not fail on a connection left with an unread body.
    use std::io::Write;
    let s = Server::start(TASKS, &[]);
    let addr = s.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for round in 0..5 {
        // The body comes a moment after the headers, as it may from a real client: a service
        // that answered from the headers alone left it unread in the connection.
        let body = r#"["a", "b"]"#;
        let head = format!(
            "POST /sync/no-such/task HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.write_all(body.as_bytes()).unwrap();
        assert_eq!(
            read_response(&mut conn),
            Some(404),
            "round {round}: the 404"
        );
        conn.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_response(&mut conn),
            Some(200),
            "round {round}: the call after the 404 on the same connection"
        );
    }
}
