//! Request and resource limits through the real binary: each limit's answer names its flag
//! (body size, argument count and size, sessions held, connections, a client slow to send its
//! headers).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, OPS_TASKS};

#[tokio::test]
async fn each_limit_is_answered_naming_its_flag() {
    let s = Server::start(
        OPS_TASKS,
        &[
            "--max-body-bytes=64",
            "--max-args=2",
            "--max-arg-bytes=5",
            "--max-sessions=1",
            "--max-connections=3",
            "--header-read-timeout=1s",
        ],
    );
    let big = format!("[\"{}\"]", "x".repeat(100));
    let (st, v) = s.post("/sync/tendb-cluster/demo1", Some(&big)).await;
    assert_eq!((st, v["code"].as_i64()), (413, Some(1)), "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("--max-body-bytes"),
        "{v}"
    );
    let (st, v) = s
        .post("/sync/tendb-cluster/demo1", Some(r#"["a","b","c"]"#))
        .await;
    assert_eq!((st, v["code"].as_i64()), (400, Some(1)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("--max-args"), "{v}");
    let (st, v) = s
        .post("/sync/tendb-cluster/demo1", Some(r#"["abcdef"]"#))
        .await;
    assert_eq!((st, v["code"].as_i64()), (400, Some(1)), "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("--max-arg-bytes"),
        "{v}"
    );
    let (st, _) = s
        .post("/sync/tendb-cluster/demo1", Some(r#"["a","b"]"#))
        .await;
    assert_eq!(st, 200);

    let (st, first) = s.post("/async/tendb-cluster/sleeper", None).await;
    assert_eq!(st, 200, "{first}");
    let (st, v) = s.post("/async/tendb-cluster/sleeper", None).await;
    assert_eq!((st, v["code"].as_i64()), (503, Some(1)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("--max-sessions"), "{v}");
    let id = first["data"].as_str().unwrap().to_string();
    s.post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
        .await;

    // A slow client is dropped after the header timeout.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "held for {:?}",
        started.elapsed()
    );
    drop(slow);

    // Over --max-connections: while connections are idle, the one idle longest makes room ...
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let c = TcpStream::connect(&addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        })
        .collect();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let st = fresh.get(format!("{}/ping", s.base)).send().await.unwrap();
    assert_eq!(st.status(), 200);
    drop(idle);
    // ... and once all three are busy with requests (headers sent, body still coming), the
    // fourth is answered 503.
    // `Expect: 100-continue` makes the service say when it reads the body: the request is then
    // in flight. One taken for idle before its headers were read (to make room for the next)
    // is opened again.
    let busy = || {
        for _ in 0..20 {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(
                b"POST /sync/tendb-cluster/demo1 HTTP/1.1\r\nHost: x\r\n\
                  Expect: 100-continue\r\nContent-Length: 10\r\n\r\n",
            )
            .unwrap();
            let mut buf = [0u8; 64];
            match c.read(&mut buf) {
                Ok(n) if buf[..n].starts_with(b"HTTP/1.1 100") => return c,
                _ => continue,
            }
        }
        panic!("no request of 20 was read");
    };
    let held: Vec<TcpStream> = (0..3).map(|_| busy()).collect();
    let mut extra = TcpStream::connect(&addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("--max-connections"), "{answer}");
    assert!(answer.contains(r#""code":1"#), "{answer}");
    drop(held);
}
