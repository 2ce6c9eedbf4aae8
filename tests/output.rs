//! A run's output, through the real binary: every line in its task log with session and stream,
//! 50 MB of output without the service's memory growing, quick calls answered while another run
//! logs 50 MB with rotation, and `/async/output` by offset and `/async/output-stream` as
//! server-sent events to the run's end.

mod common;

use std::time::Duration;

use common::{poll, sync, Server, OPS_TASKS, TASKS};
use serde_json::{json, Value};

/// A quick task, and one printing 50 MB in 50 steps.
const BIG_TASKS: &str = r#"
- name: quick
  cluster_type: test
  language: sh
  executable: echo quick
  collected: false
- name: slow_big
  cluster_type: test
  language: sh
  executable: 'for i in $(seq 50); do yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c 1000000; sleep 0.05; done; echo END'
  collected: false
"#;

#[tokio::test]
async fn logs_record_every_line_with_session_and_stream() {
    let s = Server::start(TASKS, &[]);
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
async fn fifty_megabytes_of_output_do_not_grow_memory() {
    let s = Server::start(TASKS, &[]);
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
async fn quick_calls_answer_while_another_run_logs_50_mb_with_rotation() {
    let s = Server::start(BIG_TASKS, &["--log-max-bytes", "1048576"]);
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

#[tokio::test]
async fn output_by_offset_while_printing_and_the_event_stream_to_its_end() {
    let s = Server::start(OPS_TASKS, &[]);
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
