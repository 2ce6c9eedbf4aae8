//! A run's time limit: a task's `timeout`, else `--default-timeout`, ends the run as a kill does,
//! grandchildren included; a built-in task gets it through its cancellation.

use std::time::{Duration, Instant};

use crate::{all_gone, start};

#[tokio::test]
async fn a_hung_task_is_ended_by_its_timeout_with_its_grandchildren() {
    let yaml = r#"
- name: hang
  cluster_type: RunControl
  language: sh
  executable: 'sh -c "sleep 600 & echo \$! >> \"$PWD/hang.pids\"; sleep 600" & echo $! >> "$PWD/hang.pids"; wait'
  collected: false
  timeout: 1s
- name: hang-default
  cluster_type: RunControl
  language: sh
  executable: 'sleep 600'
  collected: false
"#;
    let s = start(yaml, "auto", &["--default-timeout", "2s"]);
    let began = Instant::now();
    let (_, v) = s.post("/sync/run-control/hang", None).await;
    assert_eq!(v["code"], 1, "{v}");
    assert!(
        v["msg"].as_str().unwrap().starts_with("timed out after 1s"),
        "{v}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    let pids: Vec<i32> = std::fs::read_to_string(s.path("hang.pids"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    all_gone(&pids, Duration::from_secs(3), "timed-out run").await;

    // The service-wide default, in an async session.
    let (_, v) = s.post("/async/run-control/hang-default", None).await;
    let id = v["data"].as_str().unwrap();
    let done = s.wait_done(id, Duration::from_secs(10)).await;
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 2s"),
        "{done}"
    );

    // A built-in task gets the same timeout through its cancellation.
    let (_, v) = s
        .post("/sync/tendb-ha/counter", Some(r#"{"counter": 10}"#))
        .await;
    assert_eq!(v["code"], 1, "{v}");
    assert!(
        v["msg"].as_str().unwrap().starts_with("timed out after 2s"),
        "{v}"
    );
}
