//! `concurrency_policy: replace`: a new call ends the active run as a kill does (its session says
//! which run replaced it) and starts once it has ended; in the end one run is left, and no
//! process of the others.

use std::time::Duration;

use crate::common::{concurrent, mark_task, poll, process_gone};
use crate::start;

#[tokio::test]
async fn replace_under_concurrent_calls_leaves_only_the_newest_run() {
    let s = start(&mark_task("replaced", "replace"), "auto", &[]);
    let body = |name: &str| format!(r#"["{}", "600"]"#, s.path(name).display());

    // replace: five concurrent calls all start; in the end one runs, and every other session
    // says which run replaced it, its processes gone.
    let answers = concurrent(&s, "/async/run-control/replaced", &body("replaced"), 5).await;
    assert!(answers.iter().all(|(st, _)| *st == 200), "{answers:?}");
    let ids: Vec<String> = answers
        .iter()
        .map(|(_, v)| v["data"].as_str().unwrap().to_string())
        .collect();
    let mut ended = 0;
    for id in &ids {
        let state = poll(Duration::from_secs(15), || async {
            let st = s.session(id).await;
            let error = st["error"].as_str().unwrap_or_default().to_string();
            (st["done"] == true || ids.iter().any(|_| error.is_empty())).then_some(st)
        })
        .await;
        if state["done"] == true {
            ended += 1;
            let error = state["error"].as_str().unwrap();
            let by = error
                .strip_prefix("replaced by ")
                .unwrap_or_else(|| panic!("{state}"));
            assert!(ids.iter().any(|i| i == by), "{state}");
        }
    }
    let still = poll(Duration::from_secs(15), || async {
        let mut running = 0;
        for id in &ids {
            if s.session(id).await["done"] == false {
                running += 1;
            }
        }
        (running == 1).then_some(running)
    })
    .await;
    assert_eq!(still, 1, "ended {ended}");
    // Only the surviving run's processes are left: every other run's sleep is gone.
    let marked = marked_processes(&ids);
    assert_eq!(marked.len(), 1, "{marked:?}");
}

/// The sessions among `ids` that still have a running process, read from each process's
/// environment in `/proc` (every run's processes carry `CS_SESSION_ID`).
fn marked_processes(ids: &[String]) -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if process_gone(pid) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for id in ids {
            let needle = format!("CS_SESSION_ID={id}");
            if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                found.insert(id.clone());
            }
        }
    }
    found.into_iter().collect()
}
