//! Tests of the run-control fields of a task (`timeout`, `concurrency_policy`,
//! `detach_children`), kept apart so that parse.rs stays under 500 lines.

use super::*;

#[test]
fn run_control_fields_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let base = "cluster_type: A, language: sh, executable: echo, collected: false";
    let yaml = format!(
        "- {{name: a, {base}, timeout: 15m, concurrency_policy: forbid, detach_children: true}}\n\
         - {{name: b, {base}}}"
    );
    let tasks = parse_tasks(&yaml, dir.path()).unwrap();
    assert_eq!(tasks[0].timeout, Some(std::time::Duration::from_secs(900)));
    assert_eq!(tasks[0].concurrency_policy, ConcurrencyPolicy::Forbid);
    assert!(tasks[0].detach_children);
    assert_eq!(tasks[1].timeout, None);
    assert_eq!(tasks[1].concurrency_policy, ConcurrencyPolicy::Allow);
    assert!(!tasks[1].detach_children);
    let yaml = format!(
        "- {{name: c, {base}, timeout: soon, concurrency_policy: queue, detach_children: 1}}\n\
         - {{name: d, {base}, timeout: 0s}}"
    );
    let e = parse_tasks(&yaml, dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("task #1 `c`: field `timeout`: `soon` is not a duration"),
        "{e}"
    );
    assert!(
        e.contains(
            "task #1 `c`: field `concurrency_policy`: must be one of allow, forbid, replace"
        ),
        "{e}"
    );
    assert!(
        e.contains("task #1 `c`: field `detach_children`: must be true or false"),
        "{e}"
    );
    assert!(
        e.contains("task #2 `d`: field `timeout`: must be longer than 0s"),
        "{e}"
    );
}
