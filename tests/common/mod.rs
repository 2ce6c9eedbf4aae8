//! Test harness: starts the real `celery-service` binary on an ephemeral loopback port, in a
//! temporary folder of its own (config, collect folder, logs), and talks to it over real HTTP.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// The task set most tests serve, one task per behaviour they check (`tests/fixtures/tasks.yaml`).
pub const TASKS: &str = include_str!("../fixtures/tasks.yaml");

/// The task set of the operational tests: auth, limits, metrics, probes and output
/// (`tests/fixtures/ops-tasks.yaml`).
pub const OPS_TASKS: &str = include_str!("../fixtures/ops-tasks.yaml");

/// The fixture scripts, copied into every server's collect folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/collect")
}

/// A running service.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The folder holding `external-tasks.yaml`, `collect/` and `logs/`.
    pub dir: tempfile::TempDir,
    /// Everything the service printed on stdout so far.
    pub stdout: Arc<Mutex<String>>,
    /// An HTTP client.
    pub http: reqwest::Client,
}

/// Copies every file of `from` into `to`, keeping permissions.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The path of the built binary, or of the one `CS_TEST_BINARY` names (to check that a test
/// fails on an older build).
pub fn binary() -> &'static str {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var("CS_TEST_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_celery-service").to_string())
    })
}

impl Server {
    /// Starts the service on `yaml` with the fixture scripts and extra flags.
    pub fn start(yaml: &str, extra: &[&str]) -> Self {
        Self::start_with(yaml, extra, |_| {})
    }

    /// Like [`Server::start`], letting the caller adjust the command (environment, …).
    pub fn start_with(yaml: &str, extra: &[&str], adjust: impl FnOnce(&mut Command)) -> Self {
        Self::launch(Command::new(binary()), yaml, extra, adjust)
    }

    /// Like [`Server::start`], the binary started by `sh` after the shell command `setup` (such
    /// as `ulimit -n 64`), which applies to the service too.
    pub fn start_after(setup: &str, yaml: &str, extra: &[&str]) -> Self {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("{setup} && exec \"$0\" \"$@\""), binary()]);
        Self::launch(cmd, yaml, extra, |_| {})
    }

    fn launch(
        mut cmd: Command,
        yaml: &str,
        extra: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixtures(), &dir.path().join("collect"));
        std::fs::write(dir.path().join("external-tasks.yaml"), yaml).unwrap();
        cmd.current_dir(dir.path())
            .args(["run", "--address", "127.0.0.1:0", "--log-console"])
            .args(extra)
            .env_remove("CS_LOG")
            // Dropped with runs going, a test's service ends them at once, not after 30 s.
            .env("CS_SHUTDOWN_TIMEOUT", "0s")
            // Stopped by a test, not behind a load balancer: runs are refused at the signal.
            .env("CS_DRAIN_DELAY", "0s")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("start celery-service");
        let stdout = child.stdout.take().unwrap();
        let captured = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let captured = captured.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(pos) = line.find("listening on ") {
                        let addr = line[pos + 13..]
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_string();
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                    let mut c = captured.lock().unwrap();
                    c.push_str(&line);
                    c.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "the service did not start ({status}); stdout:\n{}",
                    captured.lock().unwrap()
                );
            }
        };
        Self {
            child,
            base: format!("http://{addr}"),
            dir,
            stdout: captured,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// The service's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A path inside the server's folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `POST path` with `body` (none when `None`); the status and the parsed JSON answer.
    pub async fn post(&self, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, json)
    }

    /// `GET path`; the status and the body text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// `GET path`; the status and the parsed JSON answer.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
        )
    }

    /// The session as `/async/query` shows it.
    pub async fn session(&self, id: &str) -> Value {
        let (status, v) = self
            .post("/async/query", Some(&format!(r#"{{"session_id":"{id}"}}"#)))
            .await;
        assert_eq!(status, 200, "{v}");
        v["data"][0].clone()
    }

    /// Polls a session until it is done.
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Value {
        poll(timeout, || async {
            let s = self.session(id).await;
            (s["done"] == true).then_some(s)
        })
        .await
    }

    /// The text of a task's log file.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("logs/{name}.log"))).unwrap_or_default()
    }

    /// Sends `signal` (a number, such as 15 for SIGTERM) to the service.
    pub fn signal(&self, signal: i32) {
        let signal = Signal::try_from(signal).unwrap_or_else(|e| panic!("signal {signal}: {e}"));
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits in i32"));
        kill(pid, signal).unwrap_or_else(|e| panic!("{signal} to the service: {e}"));
    }

    /// Waits up to `timeout` for the service to exit by itself (after a signal sent with
    /// [`Server::signal`]); `None` if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the service with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(15);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// `POST /sync/<path>` with `body`; the answer, which must come with HTTP 200.
pub async fn sync(s: &Server, path: &str, body: Option<&str>) -> Value {
    let (status, v) = s.post(&format!("/sync/{path}"), body).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// A task named `name` with `concurrency_policy: policy`, running `mark.sh`: each run appends its
/// session id to the file its first argument names, then sleeps as many seconds as the second says.
pub fn mark_task(name: &str, policy: &str) -> String {
    format!(
        "
- name: {name}
  cluster_type: RunControl
  language: sh
  executable: mark.sh
  collected: true
  concurrency_policy: {policy}
"
    )
}

/// Fires `n` calls of `POST path` with `body` at once; their statuses and answers.
pub async fn concurrent(s: &Server, path: &str, body: &str, n: usize) -> Vec<(u16, Value)> {
    futures::future::join_all((0..n).map(|_| s.post(path, Some(body)))).await
}

/// Calls `f` until it returns `Some`, every 20 ms, failing the test after `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process is gone (or a zombie nobody will run again).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// The state letter and process group of `pid`, from `/proc/<pid>/stat`; `None` once it is gone.
pub fn state_and_group(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, and it may hold anything): state, ppid, pgrp.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Every process of group `pgid` that is not a zombie, read from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if matches!(state_and_group(pid), Some((state, g)) if g == pgid && state != 'Z') {
            members.push(pid);
        }
    }
    members
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS` (current) or `VmHWM` (peak) memory.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
