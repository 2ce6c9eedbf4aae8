//! The serving layer through the real binary and raw sockets: a client that half-closes its
//! socket still gets its answer, a client that really goes away has its run cancelled, and a run
//! logging 50 MB with rotation every MiB stalls nobody else.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{poll, process_gone, Server};
use serde_json::Value;

const TASKS: &str = r#"
- name: nap
  cluster_type: test
  language: sh
  executable: sleep 1; echo rested
  collected: false
- name: quick
  cluster_type: test
  language: sh
  executable: echo quick
  collected: false
- name: sleeper
  cluster_type: test
  language: sh
  executable: sleeper.sh
  collected: true
- name: slow_big
  cluster_type: test
  language: sh
  executable: 'for i in $(seq 50); do yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c 1000000; sleep 0.05; done; echo END'
  collected: false
"#;

/// `host:port` of the server.
fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Sends a raw HTTP/1.1 `POST path` with `body` on a new connection.
fn send_raw(s: &Server, path: &str, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr(s)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
}

/// The final answer in `raw` after any interim (1xx) answers: its status line and JSON body.
fn final_answer(raw: &str) -> (String, Value) {
    let mut rest = raw;
    while rest.starts_with("HTTP/1.1 1") {
        let end = rest.find("\r\n\r\n").expect("an interim answer ends");
        rest = &rest[end + 4..];
    }
    let (head, body) = rest.split_once("\r\n\r\n").expect("an answer with a body");
    let status = head.lines().next().unwrap_or("").to_string();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"));
    (status, body)
}

/// Waits for the sleeper task's grandchild to start; its pid.
async fn grandchild(s: &Server, pidfile: &std::path::Path) -> i32 {
    let _ = s;
    poll(Duration::from_secs(20), || async {
        std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
    .await
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let s = Server::start(TASKS, &[]);
    let mut stream = send_raw(&s, "/sync/test/nap", "[]");
    // Done sending: FIN. The task sleeps a second, long past the service's first hang-up check.
    stream.shutdown(Shutdown::Write).unwrap();
    let mut raw = String::new();
    tokio::task::spawn_blocking(move || {
        stream.read_to_string(&mut raw).unwrap();
        raw
    })
    .await
    .map(|raw| {
        let (status, body) = final_answer(&raw);
        assert_eq!(status, "HTTP/1.1 200 OK", "{raw}");
        assert_eq!(body["code"], 0, "{raw}");
        assert_eq!(body["data"], "rested", "{raw}");
    })
    .unwrap();
    assert!(!s.log("nap").contains("cancelled"), "{}", s.log("nap"));
}

#[tokio::test]
async fn a_client_that_closes_its_socket_has_its_run_cancelled() {
    let s = Server::start(TASKS, &[]);
    let pidfile = s.path("grandchild.pid");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    let stream = send_raw(&s, "/sync/test/sleeper", &body);
    let pid = grandchild(&s, &pidfile).await;
    // close(): a FIN, which looks just like a half-close until the service probes.
    drop(stream);
    let closed = Instant::now();
    poll(Duration::from_secs(3), || async {
        s.log("sleeper")
            .contains("cancelled: the client disconnected")
            .then_some(())
    })
    .await;
    eprintln!("cancelled {:?} after the close", closed.elapsed());
    poll(Duration::from_secs(15), || async {
        process_gone(pid).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_that_half_closes_then_goes_away_has_its_run_cancelled() {
    let s = Server::start(TASKS, &[]);
    let pidfile = s.path("grandchild.pid");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    let stream = send_raw(&s, "/sync/test/sleeper", &body);
    stream.shutdown(Shutdown::Write).unwrap();
    let pid = grandchild(&s, &pidfile).await;
    // Half-closed and still there: the run goes on past several probes.
    let mut peek = [0u8; 64];
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let got = (&stream).read(&mut peek).unwrap();
    assert!(
        std::str::from_utf8(&peek[..got])
            .unwrap()
            .starts_with("HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&peek[..got])
    );
    assert!(!process_gone(pid));
    assert!(!s.log("sleeper").contains("cancelled"));
    drop(stream);
    poll(Duration::from_secs(4), || async {
        s.log("sleeper")
            .contains("cancelled: the client disconnected")
            .then_some(())
    })
    .await;
    poll(Duration::from_secs(15), || async {
        process_gone(pid).then_some(())
    })
    .await;
}

#[tokio::test]
async fn quick_calls_answer_while_another_run_logs_50_mb_with_rotation() {
    let s = Server::start(TASKS, &["--log-max-bytes", "1048576"]);
    let (status, v) = s.post("/async/test/slow-big", None).await;
    assert_eq!(status, 200, "{v}");
    let id = v["data"].as_str().unwrap().to_string();
    // Wait for the big run to be well under way (its log has rotated).
    poll(Duration::from_secs(30), || async {
        s.path("logs/slow_big.log.1").exists().then_some(())
    })
    .await;
    let mut answered_while_running = 0;
    loop {
        // A new connection each time, so the calls land wherever the server puts them.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let v: Value = client
            .post(format!("{}/sync/test/quick", s.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["data"], "quick", "{v}");
        if s.session(&id).await["done"] == true {
            break;
        }
        answered_while_running += 1;
        if answered_while_running == 20 {
            break;
        }
    }
    assert!(
        answered_while_running >= 5,
        "only {answered_while_running} quick calls answered while the big run was running"
    );
    let done = s.wait_done(&id, Duration::from_secs(120)).await;
    assert!(done["message"].as_str().unwrap().ends_with("END"), "{done}");
    assert!(s.path("logs/slow_big.log.3").exists());
}
