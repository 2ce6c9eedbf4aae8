//! How a run ends, every way, through the real binary: by itself (and what it left running), a
//! kill request, a sync client hanging up, its timeout, a newer run replacing it, and the service
//! shutting down. Whatever ends it, every process it started is gone afterwards, checked on
//! `/proc` (never on the service's word), with both process-tracking mechanisms where they
//! differ, and with a grandchild that ignores SIGTERM (only SIGKILL to the whole group ends it).
//!
//! One test binary, one module per way a run ends; the helpers they share are here.

#[path = "../common/mod.rs"]
mod common;

mod exit;
mod hangup;
mod kill;
mod replace;
mod shutdown;
mod timeout;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{group_members, poll, process_gone, state_and_group, Server};

const STUBBORN_TASKS: &str = r#"
- name: stubborn
  cluster_type: Runner
  language: binary
  executable: stubborn.sh
  collected: true
- name: up_then_sleep
  cluster_type: Runner
  language: sh
  executable: echo up; exec sleep 60
  collected: false
- name: background
  cluster_type: Runner
  language: sh
  executable: sleep 5 >/dev/null 2>&1 & echo started $!
  collected: false
- name: hello
  cluster_type: Runner
  language: binary
  executable: echo hello
  collected: false
"#;

/// The grace between SIGTERM and SIGKILL the servers here use, to keep the tests short.
const GRACE: &str = "1s";

/// The pids `stubborn.sh` writes to `file`: its own (the run's process group) and its
/// grandchild's, once it has written them; checks both are alive and in that group.
async fn stubborn_pids(file: &Path) -> (i32, i32) {
    let (leader, grandchild) = poll(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(file).ok()?;
        let (a, b) = text.trim().split_once(' ')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    })
    .await;
    assert_eq!(state_and_group(leader).map(|s| s.1), Some(leader), "leader");
    assert_eq!(state_and_group(grandchild).map(|s| s.1), Some(leader));
    assert!(group_members(leader).contains(&grandchild));
    (leader, grandchild)
}

/// Nothing of group `pgid` runs any more and `grandchild` is gone (or a zombie no one runs).
fn assert_group_gone(pgid: i32, grandchild: i32, when: &str) {
    assert!(
        process_gone(grandchild),
        "{when}: grandchild {grandchild} alive"
    );
    let left = group_members(pgid);
    assert!(left.is_empty(), "{when}: group {pgid} still has {left:?}");
}

/// The task log tells every step of ending group `pgid` with `grace`.
fn assert_logged_ending(log: &str, pgid: i32) {
    for want in [
        format!("event SIGTERM to process group {pgid}\n"),
        format!("still alive after {GRACE} grace; SIGKILL to process group {pgid}"),
        format!("event process group {pgid} gone"),
    ] {
        assert!(log.contains(&want), "{want:?} missing from the log:\n{log}");
    }
}

/// Both mechanisms, on every machine (the cgroup one needs root or a delegated cgroup).
const MECHANISMS: [&str; 2] = ["cgroup", "subreaper"];

const ESCAPERS: &str = "
- name: escapers
  cluster_type: RunControl
  language: sh
  executable: escapers.sh
  collected: true
";

/// The pids the escapers fixture wrote to `file`, once it has written all four.
async fn escaped_pids(file: &Path) -> Vec<i32> {
    poll(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (pids.len() == 4).then_some(pids)
    })
    .await
}

/// Waits until every pid is gone (or a zombie), failing with the survivors' command lines.
async fn all_gone(pids: &[i32], within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| !process_gone(*p)).collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let cmds: Vec<String> = alive
                .iter()
                .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
                .collect();
            // Do not leave them behind for the next test.
            for p in &alive {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &p.to_string()])
                    .status();
            }
            panic!("{what}: still running {alive:?}: {cmds:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(yaml: &str, mechanism: &str, extra: &[&str]) -> Server {
    let mut flags = vec!["--process-tracking", mechanism, "--kill-grace", "1s"];
    flags.extend_from_slice(extra);
    Server::start(yaml, &flags)
}
