//! Hot reload against the real binary: every way a config file really changes (in-place write,
//! rename over, a Kubernetes ConfigMap symlink swap), SIGHUP and `POST /-/reload`, a broken file
//! keeping the last good routes, running sessions of removed tasks, and requests racing many
//! rewrites.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{poll, process_gone, Server};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// A config of `sh` tasks under `TendbCluster`, each answering `echo <answer>`.
fn echo_tasks(tasks: &[(&str, &str)]) -> String {
    tasks
        .iter()
        .map(|(name, answer)| {
            format!(
                "- {{name: {name}, cluster_type: TendbCluster, language: sh, executable: echo {answer}, collected: false}}\n"
            )
        })
        .collect()
}

/// Replaces `path` the way editors and `sed -i` do: write a temporary file, rename it over.
fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_file_name(".external-tasks.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Truncates `path` and writes `text` into the same inode.
fn write_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Lays out `dir` as Kubernetes mounts a ConfigMap:
/// `dir/external-tasks.yaml -> ..data/external-tasks.yaml`, `dir/..data -> ..<version>`.
fn configmap_init(dir: &Path, version: &str, text: &str) {
    std::fs::create_dir_all(dir.join(version)).unwrap();
    std::fs::write(dir.join(version).join("external-tasks.yaml"), text).unwrap();
    symlink(version, dir.join("..data")).unwrap();
    symlink(
        "..data/external-tasks.yaml",
        dir.join("external-tasks.yaml"),
    )
    .unwrap();
}

/// Publishes a new ConfigMap version the way the kubelet does: a new folder, a temporary link to
/// it renamed over `..data` (atomic), then the old folder removed.
fn configmap_swap(dir: &Path, version: &str, text: &str) {
    let old = std::fs::read_link(dir.join("..data")).unwrap();
    std::fs::create_dir(dir.join(version)).unwrap();
    std::fs::write(dir.join(version).join("external-tasks.yaml"), text).unwrap();
    symlink(version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(old)).unwrap();
}

async fn config_status(s: &Server) -> Value {
    let (status, v) = s.get("/-/config").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 0, "{v}");
    v["data"].clone()
}

async fn wait_generation(s: &Server, generation: u64) -> Value {
    poll(WAIT, || async {
        let c = config_status(s).await;
        (c["generation"].as_u64() >= Some(generation)).then_some(c)
    })
    .await
}

/// The `data` of a successful sync call, or the HTTP status of a failed one.
async fn answer(s: &Server, path: &str) -> Result<String, u16> {
    let (status, v) = s.post(&format!("/sync/tendb-cluster/{path}"), None).await;
    if status == 200 && v["code"] == 0 {
        Ok(v["data"].as_str().unwrap().to_string())
    } else {
        Err(status)
    }
}

async fn listed_paths(s: &Server) -> BTreeSet<String> {
    let (_, v) = s.get("/list").await;
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
}

async fn discovered(s: &Server) -> BTreeSet<String> {
    let (_, v) = s.get("/discovery").await;
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap().to_string())
        .collect()
}

const BEFORE: &[(&str, &str)] = &[("keep", "same"), ("change", "old"), ("drop", "bye")];
const AFTER: &[(&str, &str)] = &[("keep", "same"), ("change", "new"), ("fresh", "hi")];

/// Starting from [`BEFORE`], `write` installs [`AFTER`]: one task added, one changed, one
/// removed, and the service follows without a restart.
async fn add_change_remove(s: &Server, write: impl FnOnce(&str)) {
    assert_eq!(answer(s, "change").await, Ok("old".into()));
    assert_eq!(answer(s, "drop").await, Ok("bye".into()));
    assert_eq!(answer(s, "fresh").await, Err(404));
    let before = config_status(s).await;
    assert_eq!(before["generation"], 1, "{before}");

    write(&echo_tasks(AFTER));

    poll(WAIT, || async { answer(s, "fresh").await.ok() }).await;
    assert_eq!(answer(s, "fresh").await, Ok("hi".into()));
    assert_eq!(answer(s, "change").await, Ok("new".into()));
    assert_eq!(answer(s, "keep").await, Ok("same".into()));
    assert_eq!(answer(s, "drop").await, Err(404));

    let after = config_status(s).await;
    assert_eq!(after["generation"], 2, "{after}");
    assert_ne!(after["checksum"], before["checksum"]);
    assert!(after["last_error"].is_null(), "{after}");

    let list = listed_paths(s).await;
    assert!(list.contains("/sync/tendb-cluster/fresh"), "{list:?}");
    assert!(!list.contains("/sync/tendb-cluster/drop"), "{list:?}");
    let disc = discovered(s).await;
    assert!(disc.contains("tendb-cluster/fresh"), "{disc:?}");
    assert!(!disc.contains("tendb-cluster/drop"), "{disc:?}");
}

#[tokio::test]
async fn an_in_place_write_is_picked_up() {
    let s = Server::start(&echo_tasks(BEFORE), &[]);
    let path = s.path("external-tasks.yaml");
    add_change_remove(&s, |text| write_in_place(&path, text)).await;
}

#[tokio::test]
async fn a_save_by_rename_is_picked_up() {
    let s = Server::start(&echo_tasks(BEFORE), &[]);
    let path = s.path("external-tasks.yaml");
    add_change_remove(&s, |text| rename_over(&path, text)).await;
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    let yaml = echo_tasks(BEFORE);
    let s = Server::start_with(
        "[]",
        &["--external-task-config", "cm/external-tasks.yaml"],
        |cmd| {
            let dir = cmd.get_current_dir().unwrap().join("cm");
            configmap_init(&dir, "..2024_01_01_00_00_00.1", &yaml);
        },
    );
    let status = config_status(&s).await;
    assert_eq!(status["config_path"], "cm/external-tasks.yaml");
    let dir = s.path("cm");
    add_change_remove(&s, |text| {
        configmap_swap(&dir, "..2024_01_01_00_05_00.2", text)
    })
    .await;
}

#[tokio::test]
async fn a_broken_file_keeps_the_last_good_routes_until_fixed() {
    let s = Server::start(&echo_tasks(&[("stay", "here")]), &[]);
    let path = s.path("external-tasks.yaml");

    // Not YAML at all.
    rename_over(&path, "- {name: [unclosed\n");
    let c = poll(WAIT, || async {
        let c = config_status(&s).await;
        (!c["last_error"].is_null()).then_some(c)
    })
    .await;
    assert!(
        c["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid YAML"),
        "{c}"
    );
    assert_eq!(c["generation"], 1);
    assert_eq!(answer(&s, "stay").await, Ok("here".into()));

    // YAML, but two tasks are wrong: every error is reported, with task and field.
    let invalid = format!(
        "{}- {{name: typo, cluster_type: TendbCluster, language: sh, executable: echo x, collected: false, colour: red}}\n\
         - {{name: lang, cluster_type: TendbCluster, language: cobol, executable: echo x, collected: false}}\n",
        echo_tasks(&[("stay", "moved"), ("extra", "x")])
    );
    rename_over(&path, &invalid);
    let c = poll(WAIT, || async {
        let c = config_status(&s).await;
        let msg = c["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        msg.contains("`typo`").then_some(c)
    })
    .await;
    let msg = c["last_error"]["message"].as_str().unwrap();
    assert!(msg.contains("task #3 `typo`: field `colour`"), "{msg}");
    assert!(msg.contains("task #4 `lang`: field `language`"), "{msg}");
    assert!(c["last_error"]["at"].as_str().unwrap().contains('T'), "{c}");
    assert_eq!(c["generation"], 1, "a rejected reload does not count");
    // Nothing of the broken file is served, not even its valid parts.
    assert_eq!(answer(&s, "stay").await, Ok("here".into()));
    assert_eq!(answer(&s, "extra").await, Err(404));
    // The service log names the task and the field.
    let log = poll(WAIT, || async {
        let out = s.stdout.lock().unwrap().clone();
        out.contains("field=\"colour\"").then_some(out)
    })
    .await;
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("task=\"typo\""), "{log}");
    assert!(log.contains("still serving generation 1"), "{log}");

    // One change is one reload: reading the file must not count as a change of it.
    let rejections = || {
        s.stdout
            .lock()
            .unwrap()
            .matches("config reload rejected")
            .count()
    };
    let first = (rejections(), c["last_error"]["at"].clone());
    let quiet_until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < quiet_until {
        let now = (
            rejections(),
            config_status(&s).await["last_error"]["at"].clone(),
        );
        assert_eq!(now, first, "the service keeps reloading an unchanged file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Fixing the file recovers by itself.
    rename_over(&path, &echo_tasks(&[("stay", "moved"), ("extra", "x")]));
    let c = wait_generation(&s, 2).await;
    assert!(c["last_error"].is_null(), "{c}");
    assert_eq!(answer(&s, "stay").await, Ok("moved".into()));
    assert_eq!(answer(&s, "extra").await, Ok("x".into()));
}

/// Long enough that the file watcher never fires during a test, to see the other triggers alone.
const NO_WATCH: &[&str] = &["--reload-debounce", "1h"];

#[tokio::test]
async fn sighup_reloads() {
    let s = Server::start(&echo_tasks(&[("one", "1")]), NO_WATCH);
    rename_over(&s.path("external-tasks.yaml"), &echo_tasks(&[("two", "2")]));
    s.signal(1);
    wait_generation(&s, 2).await;
    assert_eq!(answer(&s, "two").await, Ok("2".into()));
    assert_eq!(answer(&s, "one").await, Err(404));
    // The service is still up after the signal.
    let (status, _) = s.get_text("/ping").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn post_reload_reloads_now_and_rejects_a_broken_file_with_422() {
    let s = Server::start(&echo_tasks(&[("one", "1")]), NO_WATCH);
    let path = s.path("external-tasks.yaml");

    rename_over(&path, &echo_tasks(&[("two", "2")]));
    let (status, v) = s.post("/-/reload", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["data"]["generation"], 2, "{v}");
    assert_eq!(v["data"]["config_path"], "external-tasks.yaml", "{v}");
    assert!(v["data"]["last_error"].is_null(), "{v}");
    assert!(
        v["data"]["loaded_at"].as_str().unwrap().contains('T'),
        "{v}"
    );
    assert!(v["data"]["task_count"].as_u64().unwrap() >= 1, "{v}");
    // Served as soon as the call returns.
    assert_eq!(answer(&s, "two").await, Ok("2".into()));

    // An explicit reload of an unchanged file validates again and counts.
    let (status, v) = s.post("/-/reload", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["generation"], 3, "{v}");

    rename_over(
        &path,
        "- {name: a, cluster_type: X, language: cobol, executable: echo, collected: false}\n\
         - {cluster_type: X, language: sh, executable: echo, collected: false}\n",
    );
    let (status, v) = s.post("/-/reload", None).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["code"], 1, "{v}");
    assert!(v["data"].is_null(), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains("still serving generation 3"), "{msg}");
    assert!(msg.contains("task #1 `a`: field `language`"), "{msg}");
    assert!(msg.contains("task #2"), "{msg}");
    assert!(msg.contains("field `name`"), "{msg}");
    assert_eq!(answer(&s, "two").await, Ok("2".into()));
    let c = config_status(&s).await;
    assert_eq!(c["generation"], 3);
    assert!(
        c["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("cobol"),
        "{c}"
    );

    rename_over(&path, &echo_tasks(&[("three", "3")]));
    let (status, v) = s.post("/-/reload", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["generation"], 4, "{v}");
    assert!(v["data"]["last_error"].is_null(), "{v}");
}

#[tokio::test]
async fn a_removed_task_keeps_its_running_session_queryable_and_killable() {
    let yaml = "- {name: sleeper, cluster_type: TendbCluster, language: sh, executable: sleeper.sh, collected: true}\n";
    let s = Server::start(yaml, &[]);
    let pidfile = s.path("grandchild.pid");
    let body = serde_json::json!([pidfile.to_str().unwrap()]).to_string();
    let (status, v) = s.post("/async/tendb-cluster/sleeper", Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    let id = v["data"].as_str().unwrap().to_string();
    let grandchild: i32 = poll(WAIT, || async {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    })
    .await;

    rename_over(
        &s.path("external-tasks.yaml"),
        &echo_tasks(&[("other", "o")]),
    );
    wait_generation(&s, 2).await;
    let (status, _) = s.post("/async/tendb-cluster/sleeper", None).await;
    assert_eq!(status, 404);

    let session = s.session(&id).await;
    assert_eq!(session["done"], false, "{session}");
    let (status, v) = s
        .post("/async/kill", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["done"], true, "{v}");
    poll(WAIT, || async { process_gone(grandchild).then_some(()) }).await;
    assert_eq!(s.session(&id).await["done"], true);
}

#[tokio::test]
async fn editing_a_collected_script_needs_no_reload() {
    let yaml = "- {name: edited, cluster_type: TendbCluster, language: sh, executable: edited.sh, collected: true}\n";
    let write_script = |dir: &Path, text: &str| {
        let path = dir.join("collect/edited.sh");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let s = Server::start_with(yaml, &[], |cmd| {
        write_script(cmd.get_current_dir().unwrap(), "#!/bin/sh\necho v1\n");
    });
    assert_eq!(answer(&s, "edited").await, Ok("v1".into()));
    write_script(s.dir.path(), "#!/bin/sh\necho v2\n");
    assert_eq!(answer(&s, "edited").await, Ok("v2".into()));
    assert_eq!(config_status(&s).await["generation"], 1);
}

#[tokio::test]
async fn requests_racing_many_rewrites_always_see_one_whole_config() {
    // The answer repeats a word from `executable` and one from `args`, so a request that mixed
    // two configs would answer "A B" or "B A".
    let version = |w: &str| {
        format!(
            "- {{name: flip, cluster_type: TendbCluster, language: sh, executable: echo {w}, args: [{w}], collected: false}}\n\
             - {{name: only_{w}, cluster_type: TendbCluster, language: sh, executable: echo, collected: false}}\n"
        )
    };
    let versions = [version("B"), version("A")];
    let s = Arc::new(Server::start(&versions[1], &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (s, stop) = (s.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, v) = s.post("/sync/tendb-cluster/flip", None).await;
                seen.push((
                    status,
                    v["code"].clone(),
                    v["data"].clone(),
                    v["msg"].clone(),
                ));
            }
            seen
        }));
    }
    let path = s.path("external-tasks.yaml");
    let started = Instant::now();
    for i in 0..30u64 {
        rename_over(&path, &versions[(i % 2) as usize]);
        wait_generation(&s, i + 2).await;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rewrites too slow"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = BTreeSet::new();
    let mut total = 0;
    for w in workers {
        for (status, code, data, msg) in w.await.unwrap() {
            assert_eq!(status, 200, "{code} {data} {msg}");
            assert_eq!(code, 0, "{data} {msg}");
            let data = data.as_str().unwrap().to_string();
            assert!(data == "A A" || data == "B B", "mixed answer {data:?}");
            answers.insert(data);
            total += 1;
        }
    }
    assert_eq!(config_status(&s).await["generation"], 31);
    assert_eq!(answers.len(), 2, "only {answers:?} in {total} requests");
}
