//! Prometheus metrics through the real binary: the scrape parses with the reference OpenMetrics
//! parser, and the counters and gauges move with runs, failures, kills and reloads.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{poll, Server, OPS_TASKS};

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
    let s = Server::start(OPS_TASKS, &[]);
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
    // No live view fell behind and the log writer kept up: both counted, both zero.
    assert_eq!(value(&after, "cs_run_events_dropped_total{}"), 0.0);
    assert_eq!(value(&after, "cs_log_records_dropped{}"), 0.0);
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
        format!("{OPS_TASKS}\n# edited\n"),
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
