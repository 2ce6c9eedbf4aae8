//! What a scheduler reads: `/discovery` with each task's `enable`, `empty_param` and `crontab`,
//! and the `schedule`, `enable` and `empty_param` fields of the YAML refused, naming the task and
//! the field, at startup and at reload.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{poll, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

const YAML: &str = r#"
- name: line
  cluster_type: TendbCluster
  language: sh
  executable: echo
  collected: false
  schedule: "*/5 2-4 * * mon-fri"
  empty_param: ["--quick", 3]
  description: A scheduled report
- name: fields
  cluster_type: TendbCluster
  language: sh
  executable: echo
  collected: false
  schedule: {minute: 0, hour: "1,13"}
- name: plain
  cluster_type: redis
  language: sh
  executable: echo plain
  collected: false
- name: off
  cluster_type: redis
  language: sh
  executable: echo off
  collected: false
  enable: false
  schedule: "0 3 * * *"
"#;

fn by_name<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {items:?}"))
}

#[tokio::test]
async fn discovery_gives_each_task_its_crontab_body_and_enable() {
    let s = Server::start(YAML, &[]);
    let (status, v) = s.get("/discovery").await;
    assert_eq!(status, 200);
    let items = v["data"].as_array().unwrap();
    assert_eq!(
        by_name(items, "line"),
        &json!({
            "name": "line", "cluster_type": "TendbCluster", "url": "tendb-cluster/line",
            "enable": true, "empty_param": ["--quick", "3"], "description": "A scheduled report",
            "crontab": {"minute": "*/5", "hour": "2-4", "day_of_week": "mon-fri",
                        "day_of_month": "*", "month_of_year": "*"}
        })
    );
    assert_eq!(
        by_name(items, "fields")["crontab"],
        json!({"minute": "0", "hour": "1,13", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"})
    );
    let plain = by_name(items, "plain");
    assert_eq!(plain["empty_param"], json!([]));
    assert_eq!(plain["enable"], true);
    // No schedule: no `crontab` key at all, so the Django side keeps its own default.
    assert!(plain.get("crontab").is_none(), "{plain}");
    let off = by_name(items, "off");
    assert_eq!(off["enable"], false);
    assert_eq!(off["crontab"]["hour"], "3");
    // The built-in demo counter: never scheduled, and its body is the one it takes.
    let counter = by_name(items, "counter");
    assert_eq!(counter["url"], "tendb-ha/counter");
    assert_eq!(counter["enable"], false);
    assert_eq!(counter["empty_param"], json!({"counter": 0}));
    assert!(counter.get("crontab").is_none(), "{counter}");

    // Every task accepts its own `empty_param` as the body, as a scheduler posts it; disabled
    // tasks are served all the same.
    for item in items {
        let body = item["empty_param"].to_string();
        let (status, v) = s
            .post(
                &format!("/async/{}", item["url"].as_str().unwrap()),
                Some(&body),
            )
            .await;
        assert_eq!((status, &v["code"]), (200, &json!(0)), "{item}: {v}");
        let done = s.wait_done(v["data"].as_str().unwrap(), WAIT).await;
        assert_eq!(done["error"], "", "{item}: {done}");
        assert_eq!(done["args"], item["empty_param"], "{done}");
    }
    let (status, v) = s
        .post("/sync/tendb-cluster/line", Some(r#"["--quick", "3"]"#))
        .await;
    assert_eq!((status, v["data"].as_str()), (200, Some("--quick 3")));
}

/// A task named `bad` with one extra line of fields.
fn bad_task(fields: &str) -> String {
    format!(
        "- name: good\n  cluster_type: A\n  language: sh\n  executable: echo\n  collected: false\n\
         - name: bad\n  cluster_type: A\n  language: sh\n  executable: echo\n  collected: false\n  {fields}\n"
    )
}

/// Each bad form, and what the error must say (task #2 is `bad`).
const BAD_FORMS: &[(&str, &str)] = &[
    (
        r#"schedule: "* * * *""#,
        "task #2 `bad`: field `schedule`: `* * * *` has 4 fields",
    ),
    (
        r#"schedule: "0 24 * * *""#,
        "task #2 `bad`: field `schedule.hour`: `24`: 24 is out of range",
    ),
    (
        r#"schedule: "0 0 * JAN *""#,
        "task #2 `bad`: field `schedule.month_of_year`: `JAN`",
    ),
    (
        r#"schedule: "*/0 * * * 7""#,
        "field `schedule.minute`: `*/0`: step `0`",
    ),
    (
        "schedule: {minute: 0, hours: 3}",
        "task #2 `bad`: field `schedule.hours`: unknown field",
    ),
    (
        "schedule: {minute: [0, 30]}",
        "task #2 `bad`: field `schedule.minute`: must be a string",
    ),
    (
        "schedule: 5",
        "task #2 `bad`: field `schedule`: must be a crontab line",
    ),
    (
        "enable: \"yes\"",
        "task #2 `bad`: field `enable`: must be true or false, found a string",
    ),
    (
        "empty_param: {a: 1}",
        "task #2 `bad`: field `empty_param`: must be a list of strings, found a mapping",
    ),
    (
        "empty_param: [[1]]",
        "task #2 `bad`: field `empty_param[0]`: must be a string, found a list",
    ),
];

#[test]
fn each_bad_field_stops_the_start_naming_the_task_and_the_field() {
    for (fields, want) in BAD_FORMS {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("external-tasks.yaml"), bad_task(fields)).unwrap();
        let out = Command::new(common::binary())
            .current_dir(dir.path())
            .args(["run", "--address", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{fields} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want),
            "{fields}: {want:?} missing from:\n{err}"
        );
        assert!(!err.contains("`good`"), "{err}");
    }
}

/// Replaces the config the way editors do: a new file renamed over the old one.
fn rename_over(s: &Server, text: &str) {
    let path = s.path("external-tasks.yaml");
    let tmp = path.with_file_name(".external-tasks.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn crontab_of(s: &Server, name: &str) -> Value {
    let (_, v) = s.get("/discovery").await;
    by_name(v["data"].as_array().unwrap(), name)["crontab"].clone()
}

#[tokio::test]
async fn a_bad_schedule_at_reload_keeps_the_old_one_and_a_good_change_is_served() {
    let s = Server::start(&bad_task(r#"schedule: "0 1 * * *""#), &[]);
    assert_eq!(crontab_of(&s, "bad").await["hour"], "1");

    for (n, (fields, want)) in BAD_FORMS.iter().enumerate() {
        rename_over(&s, &bad_task(fields));
        let (_, v) = poll(WAIT, || async {
            let (status, v) = s.get("/-/config").await;
            let msg = v["data"]["last_error"]["message"].as_str().unwrap_or("");
            // Each bad version differs from the last, so its own error shows up in turn.
            msg.contains(want).then_some((status, v))
        })
        .await;
        assert_eq!(v["data"]["generation"], 1, "form {n}: {v}");
        assert_eq!(crontab_of(&s, "bad").await["hour"], "1", "form {n}");
    }

    rename_over(&s, &bad_task(r#"schedule: "30 2 * * *""#));
    let v = poll(WAIT, || async {
        let (_, v) = s.get("/-/config").await;
        (v["data"]["generation"] == 2).then_some(v)
    })
    .await;
    assert!(v["data"]["last_error"].is_null(), "{v}");
    let crontab = crontab_of(&s, "bad").await;
    assert_eq!(
        (&crontab["minute"], &crontab["hour"]),
        (&json!("30"), &json!("2"))
    );
    // The reload log names the task whose schedule changed.
    let log = poll(WAIT, || async {
        let out = s.stdout.lock().unwrap().clone();
        out.contains("config reloaded: generation 2").then_some(out)
    })
    .await;
    let line = log
        .lines()
        .find(|l| l.contains("config reloaded: generation 2"))
        .unwrap();
    assert!(line.contains(r#"changed=["a/bad"]"#), "{line}");
}
