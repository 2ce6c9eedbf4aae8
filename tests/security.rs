//! Security and operations against the real binary: the token table over every route `/list`
//! reports, each limit's answer, metrics that move, `/readyz`, and a run's output by offset and
//! as server-sent events.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{poll, Server};
use serde_json::Value;

const TASKS: &str = r#"
- name: demo1
  cluster_type: TendbCluster
  language: sh
  executable: echo hello
  collected: false
- name: fail
  cluster_type: TendbCluster
  language: sh
  executable: fail.sh
  collected: true
- name: ticker
  cluster_type: TendbCluster
  language: sh
  executable: "for i in 1 2 3 4 5 6; do echo tick $i; echo warn $i >&2; sleep 0.3; done"
  collected: false
- name: sleeper
  cluster_type: TendbCluster
  language: sh
  executable: sleep 60
  collected: false
"#;

const FULL: &str = "full-one";
const FULL2: &str = "full-two";
const READ: &str = "read-only";

/// Routes that stay open, and those a read-only token may call: what the issue says, written
/// out here rather than taken from the service's own table.
const OPEN: &[&str] = &[
    "/ping",
    "/healthz",
    "/readyz",
    "/metrics",
    "/swagger",
    "/openapi.json",
    "/openapi.yaml",
];
const READ_ROUTES: &[&str] = &[
    "/list",
    "/discovery",
    "/async/query",
    "/async/output",
    "/async/output-stream",
];

async fn call(s: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String, bool) {
    let url = format!("{}{path}", s.base);
    let mut req = match method {
        "POST" => s.http.post(url).body("[]"),
        _ => s.http.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bearer = resp
        .headers()
        .get("www-authenticate")
        .is_some_and(|v| v == "Bearer");
    (status, resp.text().await.unwrap_or_default(), bearer)
}

fn assert_refused(status: u16, body: &str, bearer: bool, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: {body}"));
    assert_eq!(v["code"], 1, "{what}: {body}");
    assert!(v["data"].is_null(), "{what}: {body}");
    assert!(
        !v["msg"].as_str().unwrap_or("").is_empty(),
        "{what}: {body}"
    );
    if want == 401 {
        assert!(bearer, "{what}: no WWW-Authenticate: Bearer");
    }
}

#[tokio::test]
async fn every_route_list_reports_needs_the_right_token() {
    let tokens = format!("--auth-token={FULL},{FULL2}");
    let read = format!("--read-token={READ}");
    // Only quick tasks: every task route is called with a full token.
    let quick = TASKS.split("- name: ticker").next().unwrap();
    let s = Server::start(quick, &[&tokens, &read]);
    let (status, list) = {
        let resp = s
            .http
            .get(format!("{}/list", s.base))
            .bearer_auth(FULL)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{list}");
    let mut routes: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(routes.len() > 20, "{routes:?}");
    // A route that does not exist yet (the result history) is protected by default.
    routes.push(("GET".into(), "/results".into()));
    routes.push(("POST".into(), "/sync/no-such/task".into()));
    for (method, path) in &routes {
        // The stream would wait for a run: ask it about a session that cannot exist.
        let path = if path.starts_with("/async/output") {
            format!("{path}?session_id=not-a-uuid")
        } else {
            path.clone()
        };
        let bare = path.split('?').next().unwrap();
        let what = |who: &str| format!("{method} {path} with {who}");
        let (st, body, bearer) = call(&s, method, &path, None).await;
        if OPEN.contains(&bare) {
            assert!(st != 401 && st != 403, "{}: {st} {body}", what("no token"));
            continue;
        }
        assert_refused(st, &body, bearer, 401, &what("no token"));
        let (st, body, bearer) = call(&s, method, &path, Some("wrong")).await;
        assert_refused(st, &body, bearer, 401, &what("a wrong token"));
        let (st, body, bearer) = call(&s, method, &path, Some(READ)).await;
        if READ_ROUTES.contains(&bare) {
            assert!(
                st != 401 && st != 403,
                "{}: {st} {body}",
                what("a read token")
            );
        } else {
            assert_refused(st, &body, bearer, 403, &what("a read token"));
        }
        for full in [FULL, FULL2] {
            let (st, body, _) = call(&s, method, &path, Some(full)).await;
            assert!(
                st != 401 && st != 403,
                "{}: {st} {body}",
                what("a full token")
            );
        }
    }
    // The log names route and outcome, never a token.
    let log = poll(Duration::from_secs(5), || async {
        let log = std::fs::read_to_string(s.path("logs/celery-service.log")).unwrap_or_default();
        log.contains("wrong_token").then_some(log)
    })
    .await;
    assert!(
        log.contains(r#"route="/sync/:cluster_type/:name""#),
        "{log}"
    );
    for secret in [FULL, FULL2, READ, "Bearer"] {
        assert!(!log.contains(secret), "the log holds {secret}");
    }
    // The document declares the scheme on protected operations only.
    let (_, doc) = s.get("/openapi.json").await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/sync/tendb-cluster/demo1"]["post"]["security"][0]["bearer"],
        serde_json::json!([])
    );
    assert!(doc["paths"]["/ping"]["get"].get("security").is_none());
}

#[tokio::test]
async fn a_token_file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# ops\nfirst\n").unwrap();
    let arg = format!("--auth-token-file={}", file.display());
    let s = Server::start(TASKS, &[&arg]);
    assert_eq!(call(&s, "GET", "/-/config", Some("first")).await.0, 200);
    assert_eq!(call(&s, "GET", "/-/config", Some("second")).await.0, 401);
    std::fs::write(&file, "second\n").unwrap();
    poll(Duration::from_secs(10), || async {
        (call(&s, "GET", "/-/config", Some("second")).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(call(&s, "GET", "/-/config", Some("first")).await.0, 401);
}

#[tokio::test]
async fn metrics_token_closes_metrics() {
    let s = Server::start(TASKS, &["--metrics-token=scrape"]);
    assert_eq!(call(&s, "GET", "/metrics", None).await.0, 401);
    assert_eq!(call(&s, "GET", "/metrics", Some("scrape")).await.0, 200);
    // Authentication of everything else stays off.
    assert_eq!(call(&s, "GET", "/list", None).await.0, 200);
}

#[tokio::test]
async fn each_limit_is_answered_naming_its_flag() {
    let s = Server::start(
        TASKS,
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

/// Parses a scrape with the Python reference OpenMetrics parser; returns
/// `name{labels} value` lines, labels sorted.
fn parse_scrape(text: &str) -> Vec<String> {
    let python = std::env::var("CS_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/target/test-venv/bin/python3",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} (scripts/test installs prometheus-client): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the scrape does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn value(samples: &[String], key: &str) -> f64 {
    samples
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_runs_failures_kills_and_reloads() {
    let s = Server::start(TASKS, &[]);
    let scrape = || async {
        let (st, text) = s.get_text("/metrics").await;
        assert_eq!(st, 200);
        parse_scrape(&text)
    };
    let before = scrape().await;
    let ok = r#"cs_runs_ended_total{outcome="ok",task="demo1"}"#;
    let failed = r#"cs_runs_ended_total{outcome="failed",task="fail"}"#;
    let killed = r#"cs_runs_ended_total{outcome="killed",task="sleeper"}"#;
    assert_eq!(value(&before, ok), 0.0);
    s.post("/sync/tendb-cluster/demo1", None).await;
    s.post("/sync/tendb-cluster/demo1", None).await;
    s.post("/sync/tendb-cluster/fail", None).await;
    let (_, v) = s.post("/async/tendb-cluster/sleeper", None).await;
    let id = v["data"].as_str().unwrap().to_string();
    // The session exists when its id is answered; its run starts a moment later.
    let running = poll(Duration::from_secs(10), || async {
        let m = scrape().await;
        (value(&m, "cs_runs_running{}") == 1.0).then_some(m)
    })
    .await;
    assert_eq!(value(&running, "cs_sessions_held{}"), 1.0);
    s.post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
        .await;
    let after = scrape().await;
    assert_eq!(value(&after, ok), 2.0, "{after:?}");
    assert_eq!(value(&after, failed), 1.0);
    assert_eq!(value(&after, killed), 1.0);
    assert_eq!(value(&after, "cs_runs_running{}"), 0.0);
    assert_eq!(value(&after, r#"cs_runs_started_total{task="demo1"}"#), 2.0);
    assert_eq!(
        value(&after, r#"cs_run_duration_seconds_count{task="demo1"}"#),
        2.0
    );
    let http =
        r#"cs_http_requests_total{method="POST",route="/sync/:cluster_type/:name",status="200"}"#;
    assert_eq!(value(&after, http), 3.0, "{after:?}");
    assert!(value(&after, "process_resident_memory_bytes{}") > 1e6);
    assert!(value(&after, "process_open_fds{}") > 3.0);
    // No raw path is ever a label value.
    assert!(
        !after.iter().any(|l| l.contains("tendb-cluster")),
        "{after:?}"
    );

    assert_eq!(value(&after, "cs_config_generation{}"), 1.0);
    std::fs::write(
        s.path("external-tasks.yaml"),
        format!("{TASKS}\n# edited\n"),
    )
    .unwrap();
    let (st, _) = s.post("/-/reload", None).await;
    assert_eq!(st, 200);
    std::fs::write(s.path("external-tasks.yaml"), "- {name: broken").unwrap();
    let (st, _) = s.post("/-/reload", None).await;
    assert_eq!(st, 422);
    let reloaded = scrape().await;
    assert_eq!(value(&reloaded, "cs_config_generation{}"), 2.0);
    assert!(value(&reloaded, r#"cs_config_reloads_total{result="ok"}"#) >= 1.0);
    assert!(value(&reloaded, r#"cs_config_reloads_total{result="rejected"}"#) >= 1.0);
}

#[tokio::test]
async fn health_and_readiness() {
    let s = Server::start(TASKS, &["--auth-token=t"]);
    let (st, v) = s.get("/healthz").await;
    assert_eq!((st, v["ready"].as_bool()), (200, Some(true)), "{v}");
    let (st, v) = s.get("/readyz").await;
    assert_eq!((st, v["ready"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["checks"][0]["name"], "config");
    // A broken reload keeps the old config serving: still ready, and the body says why.
    std::fs::write(s.path("external-tasks.yaml"), "- {name: broken").unwrap();
    poll(Duration::from_secs(10), || async {
        let (st, v) = s.get("/readyz").await;
        let detail = v["checks"][0]["detail"].as_str().unwrap_or("").to_string();
        (st == 200 && detail.contains("rejected")).then_some(())
    })
    .await;

    // A config broken at startup: the service exits non-zero and nothing ever answers /readyz.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("external-tasks.yaml"), "- {name: broken").unwrap();
    let out = std::process::Command::new(common::binary())
        .current_dir(dir.path())
        .args(["run", "--address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn output_by_offset_while_printing_and_the_event_stream_to_its_end() {
    let s = Server::start(TASKS, &[]);
    let (_, v) = s.post("/async/tendb-cluster/ticker", None).await;
    let id = v["data"].as_str().unwrap().to_string();
    let mut offset = 0u64;
    let mut lines = Vec::new();
    let mut pages_while_running = 0;
    loop {
        let (st, v) = s
            .get(&format!("/async/output?session_id={id}&offset={offset}"))
            .await;
        assert_eq!(st, 200, "{v}");
        let page = &v["data"];
        for l in page["lines"].as_array().unwrap() {
            lines.push(format!(
                "{} {}",
                l["stream"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            ));
        }
        let next = page["next_offset"].as_u64().unwrap();
        assert!(next >= offset);
        offset = next;
        if page["done"].as_bool().unwrap() {
            break;
        }
        if !lines.is_empty() {
            pages_while_running += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pages_while_running > 0, "never saw output before the end");
    let want: Vec<String> = (1..=6)
        .flat_map(|i| [format!("stdout tick {i}"), format!("stderr warn {i}")])
        .collect();
    let mut sorted_got = lines.clone();
    sorted_got.sort();
    let mut sorted_want = want.clone();
    sorted_want.sort();
    assert_eq!(sorted_got, sorted_want);

    // The event stream of a new run ends when the run ends, with every line.
    let (_, v) = s.post("/async/tendb-cluster/ticker", None).await;
    let id = v["data"].as_str().unwrap().to_string();
    let text = event_stream(&s, &id, None).await;
    let pages = sse_pages(&text);
    assert!(pages.len() >= 2, "{text}");
    assert_eq!(pages.last().unwrap().1["done"], true, "{text}");
    let count = |pages: &[(String, Value)]| -> usize {
        pages
            .iter()
            .map(|(_, p)| p["lines"].as_array().unwrap().len())
            .sum()
    };
    assert_eq!(count(&pages), 12, "{text}");
    // Each event's id is its page's next offset, so a reconnecting EventSource (which sends the
    // last id it got as `Last-Event-ID`) resumes after that page, whatever `offset` says.
    for (event_id, page) in &pages {
        assert_eq!(event_id, &page["next_offset"].to_string(), "{text}");
    }
    let (first_id, first) = &pages[0];
    let resumed = sse_pages(&event_stream(&s, &id, Some(first_id)).await);
    let first_lines = first["lines"].as_array().unwrap().len();
    assert!(first_lines > 0, "{text}");
    assert_eq!(count(&resumed), 12 - first_lines, "{resumed:?}");
    assert_eq!(resumed.last().unwrap().1["done"], true, "{resumed:?}");

    // Unknown session, and an offset past the end of the log.
    let (st, _) = s
        .get(&format!(
            "/async/output?session_id={}",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(st, 404);
    let (st, v) = s
        .get(&format!("/async/output?session_id={id}&offset=99999999"))
        .await;
    assert_eq!(st, 410, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("rotated"), "{v}");
}

/// The whole event stream of session `id` from offset 0, or from `last_event_id` as a
/// reconnecting `EventSource` asks.
async fn event_stream(s: &Server, id: &str, last_event_id: Option<&str>) -> String {
    let mut req = s.http.get(format!(
        "{}/async/output-stream?session_id={id}&offset=0",
        s.base
    ));
    if let Some(last) = last_event_id {
        req = req.header("Last-Event-ID", last);
    }
    req.send().await.unwrap().text().await.unwrap()
}

/// The `(id, data)` of each event of a server-sent event stream.
fn sse_pages(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no `{name}` in event {event:?}"))
                    .to_string()
            };
            (
                field("id: "),
                serde_json::from_str(&field("data: ")).unwrap(),
            )
        })
        .collect()
}
