//! A sync client that hangs up: its run is cancelled and its whole process group ended, whether the
//! client's HTTP library times out or its socket closes; a client that only half-closes its
//! socket after its request is not taken for gone and gets its answer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{poll, process_gone, Server, TASKS};
use crate::{assert_group_gone, assert_logged_ending, stubborn_pids, GRACE, STUBBORN_TASKS};

/// A task that naps a second before it answers, and the sleeper fixture (its grandchild writes
/// its pid to the file the first argument names).
const NAP_TASKS: &str = r#"
- name: nap
  cluster_type: test
  language: sh
  executable: sleep 1; echo rested
  collected: false
- name: sleeper
  cluster_type: test
  language: sh
  executable: sleeper.sh
  collected: true
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
async fn a_sync_client_that_goes_away_cancels_its_run() {
    let s = Server::start(TASKS, &[]);
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
async fn a_sync_client_hanging_up_ends_a_grandchild_that_ignores_sigterm() {
    let s = Server::start(STUBBORN_TASKS, &["--kill-grace", GRACE]);
    let pidfile = s.path("pids");
    let body = serde_json::to_string(&[pidfile.display().to_string()]).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let call = client
        .post(format!("{}/sync/runner/stubborn", s.base))
        .body(body)
        .send();
    let (answer, (leader, grandchild)) = tokio::join!(call, stubborn_pids(&pidfile));
    assert!(answer.is_err(), "the task answered: {answer:?}");
    // The service notices the hang-up by itself, some time later: wait for the log to say the
    // run has ended, then check /proc.
    let log = poll(Duration::from_secs(15), || async {
        let log = s.log("stubborn");
        log.contains("failed in").then_some(log)
    })
    .await;
    assert_group_gone(leader, grandchild, "after the run ended");
    assert!(log.contains("cancelled: the client disconnected"), "{log}");
    assert_logged_ending(&log, leader);
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let s = Server::start(NAP_TASKS, &[]);
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
    let s = Server::start(NAP_TASKS, &[]);
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
    let s = Server::start(NAP_TASKS, &[]);
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
