//! Connection handling against the real binary, over raw TCP on loopback: connections that send
//! nothing or half their headers cannot lock the probes out and are closed within the header read
//! timeout (HTTP/1 and h2c alike), a keep-alive connection left idle is closed after
//! `--keep-alive-timeout`, and a slow but complete request in progress is never evicted.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TASKS: &str = r#"
- name: slow
  cluster_type: TendbCluster
  language: sh
  executable: "sleep 3; echo slept"
  collected: false
- name: echo
  cluster_type: TendbCluster
  language: sh
  executable: echo
  collected: false
"#;

/// The service's `host:port`.
fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Reads until the service closes the connection (EOF or reset); how long that took from `since`
/// and what was read.
async fn until_closed(mut c: TcpStream, since: Instant) -> (Duration, Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf).await {
            Ok(0) | Err(_) => return (since.elapsed(), seen),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// One request on a connection of its own, answered within a second: its status.
async fn probe(client: &reqwest::Client, s: &Server, path: &str) -> u16 {
    let began = Instant::now();
    let resp = client
        .get(format!("{}{path}", s.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} after {:?}: {e}", began.elapsed()));
    let took = began.elapsed();
    assert!(took < Duration::from_secs(1), "{path} took {took:?}");
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_neither_lock_out_probes_nor_outlive_the_header_timeout() {
    // 1,500 sockets here and as many in the service, beside the usual soft limit of 1,024.
    rlimit::increase_nofile_limit(8192).unwrap();
    let header_timeout = Duration::from_secs(3);
    let s = Server::start(
        TASKS,
        &["--header-read-timeout=3s", "--max-connections=1000"],
    );
    let addr = addr(&s);
    let mut held = Vec::new();
    for i in 0..1500 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let since = Instant::now();
        if i % 2 == 1 {
            c.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        held.push(tokio::spawn(until_closed(c, since)));
    }
    // Every probe on a fresh connection (no pool), as a load balancer's health check makes.
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(probe(&fresh(), &s, "/ping").await, 200);
        assert_eq!(probe(&fresh(), &s, "/readyz").await, 200);
    }
    for h in held {
        let (open_for, seen) = h.await.unwrap();
        assert!(
            open_for <= header_timeout + Duration::from_secs(1),
            "held for {open_for:?}"
        );
        assert!(
            seen.is_empty() || seen.starts_with(b"HTTP/1.1 408"),
            "{seen:?}"
        );
    }
    let (_, metrics) = s.get_text("/metrics").await;
    for reason in ["evicted", "header_timeout"] {
        assert!(
            metrics.contains(&format!(
                "cs_connections_closed_total{{reason=\"{reason}\"}}"
            )),
            "{reason}:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn an_h2c_connection_without_requests_is_closed_like_an_http1_one() {
    let s = Server::start(TASKS, &["--header-read-timeout=1s"]);
    let mut held = Vec::new();
    for preface in [
        &b""[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    ] {
        let mut c = TcpStream::connect(addr(&s)).await.unwrap();
        let since = Instant::now();
        c.write_all(preface).await.unwrap();
        held.push(tokio::spawn(until_closed(c, since)));
    }
    for h in held {
        let (open_for, _) = h.await.unwrap();
        assert!(open_for <= Duration::from_secs(2), "held for {open_for:?}");
    }
}

#[tokio::test]
async fn a_keep_alive_connection_left_idle_is_closed_after_the_keep_alive_timeout() {
    let s = Server::start(
        TASKS,
        &["--keep-alive-timeout=2s", "--header-read-timeout=30s"],
    );
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    // Two requests on the one connection: it is kept alive between them.
    ping(&mut c).await;
    ping(&mut c).await;
    let (idle_for, seen) = until_closed(c, Instant::now()).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert!(
        idle_for >= Duration::from_millis(1900) && idle_for <= Duration::from_secs(3),
        "closed after {idle_for:?} idle"
    );
}

/// `GET /ping` on `c`, answered 200 with the connection kept open.
async fn ping(c: &mut TcpStream) {
    c.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"pong") {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_until_a_request_begins() {
    let s = Server::start(
        TASKS,
        &["--keep-alive-timeout=30s", "--header-read-timeout=1s"],
    );
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    ping(&mut c).await;
    // Idle for longer than the header read timeout, the connection is still kept alive ...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ping(&mut c).await;
    // ... but a next request's headers must come within it.
    c.write_all(b"GET /ping HTTP/1.1\r\n").await.unwrap();
    let (open_for, seen) = until_closed(c, Instant::now()).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert!(open_for <= Duration::from_secs(2), "held for {open_for:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_complete_request_in_progress_is_never_evicted() {
    let s = Server::start(
        TASKS,
        &[
            "--max-connections=3",
            "--header-read-timeout=1s",
            "--keep-alive-timeout=1s",
        ],
    );
    let addr = addr(&s);
    // A request whose task takes 3 s, and one whose body comes slowly; both in flight before
    // any other connection comes.
    let mut slow_task = in_flight(&addr, "/sync/tendb-cluster/slow", 2).await;
    slow_task.write_all(b"[]").await.unwrap();
    let mut slow_body = in_flight(&addr, "/sync/tendb-cluster/echo", 9).await;
    slow_body.write_all(b"[\"a\"").await.unwrap();
    let began = Instant::now();
    // Meanwhile more connections than the limit come and go, and the timeouts pass.
    let mut idle = Vec::new();
    while began.elapsed() < Duration::from_millis(2500) {
        let c = TcpStream::connect(&addr).await.unwrap();
        idle.push(tokio::spawn(until_closed(c, Instant::now())));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The slow client sends the rest of its body at last.
    slow_body.write_all(b",\"b\"]").await.unwrap();
    let (_, answer) = until_answered(&mut slow_body).await;
    assert!(
        answer.contains("HTTP/1.1 200") && answer.contains("a b"),
        "{answer}"
    );
    let (_, answer) = until_answered(&mut slow_task).await;
    assert!(
        answer.contains("HTTP/1.1 200") && answer.contains("slept"),
        "{answer}"
    );
    for h in idle {
        let (_, seen) = h.await.unwrap();
        assert!(seen.is_empty(), "{seen:?}");
    }
}

/// A `POST path` whose headers the service has read and whose body of `length` bytes it waits
/// for (`Expect: 100-continue`: it says so when it starts reading the body).
async fn in_flight(addr: &str, path: &str, length: usize) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while !answer.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("100 Continue within 10 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 100"), "{answer:?}");
    c
}

/// Reads one JSON answer (until its closing brace); the time it took and its text.
async fn until_answered(c: &mut TcpStream) -> (Duration, String) {
    let began = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf))
            .await
            .expect("an answer within 20 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    (
        began.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}
