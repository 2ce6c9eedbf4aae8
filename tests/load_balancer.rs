//! A rolling restart behind a real HAProxy (Debian's package, `scripts/system-packages.sh`)
//! running `deploy/haproxy.cfg` on free loopback ports, in front of two replicas (the real
//! binary, each with its own embedded store): restarting each replica in turn under steady load
//! of sync calls fails no call, and a draining replica's `/readyz` says why. The restart runs
//! twice: with the example config as it is, and with HAProxy not retrying 503s, which shows that
//! the drain delay alone keeps every call away from a replica that refuses runs.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, poll};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const TASKS: &str = r#"
- name: slow
  cluster_type: lb
  language: sh
  executable: "sleep 0.3; echo served by $REPLICA"
  collected: false
"#;

/// How long a replica's `/readyz` fails before it refuses runs (`--drain-delay`).
const DRAIN_DELAY: &str = "3s";

/// A port that was free a moment ago, and never handed to another test of this file: the tests
/// run at once, and a replica restarting on its port must not meet another test's replica there.
fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// One replica: the real binary on a fixed loopback port, restartable on that port.
struct Replica {
    name: &'static str,
    port: u16,
    drain_delay: &'static str,
    dir: tempfile::TempDir,
    child: Child,
}

impl Replica {
    fn start(name: &'static str, port: u16) -> Self {
        Self::with_drain_delay(name, port, DRAIN_DELAY)
    }

    fn with_drain_delay(name: &'static str, port: u16, drain_delay: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("collect")).unwrap();
        std::fs::write(dir.path().join("external-tasks.yaml"), TASKS).unwrap();
        let child = Self::spawn(name, port, dir.path(), drain_delay);
        Self {
            name,
            port,
            drain_delay,
            dir,
            child,
        }
    }

    fn spawn(name: &str, port: u16, dir: &Path, drain_delay: &str) -> Child {
        Command::new(binary())
            .current_dir(dir)
            .args(["run", "--address", &format!("127.0.0.1:{port}")])
            .args(["--drain-delay", drain_delay, "--shutdown-timeout", "10s"])
            .env_remove("CS_LOG")
            .env_remove("CS_DRAIN_DELAY")
            .env("REPLICA", name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start celery-service")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/readyz` answers 200.
    async fn ready(&mut self, http: &reqwest::Client) {
        let url = self.url("/readyz");
        let child = &mut self.child;
        poll(Duration::from_secs(20), || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the replica exited at start"
            );
            let answer = http.get(&url).send();
            async move { answer.await.is_ok_and(|r| r.status() == 200).then_some(()) }
        })
        .await;
    }

    fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the replica to exit after [`Replica::terminate`], then starts it again.
    async fn restart(&mut self) {
        let child = &mut self.child;
        let status = poll(Duration::from_secs(30), || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await;
        assert!(status.success(), "{} exited with {status}", self.name);
        self.child = Self::spawn(self.name, self.port, self.dir.path(), self.drain_delay);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy running `deploy/haproxy.cfg` with its addresses replaced.
/// The child, and the folder holding its config (kept until the end).
struct HaProxy(Child, #[allow(dead_code)] tempfile::TempDir);

impl HaProxy {
    /// Starts HAProxy; without `retry_503`, a 503 answer is passed on to the client.
    fn start(front: u16, replicas: [u16; 2], retry_503: bool) -> Self {
        let config = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg"),
        )
        .unwrap();
        let config = [
            ("127.0.0.1:8080", front),
            ("127.0.0.1:8081", replicas[0]),
            ("127.0.0.1:8082", replicas[1]),
        ]
        .iter()
        .fold(config, |text, (example, port)| {
            assert!(text.contains(example), "no {example} in deploy/haproxy.cfg");
            text.replace(example, &format!("127.0.0.1:{port}"))
        });
        let retry = "retry-on conn-failure empty-response 503";
        assert!(config.contains(retry), "no `{retry}` in deploy/haproxy.cfg");
        let config = if retry_503 {
            config
        } else {
            config.replace(retry, "retry-on conn-failure empty-response")
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy is installed (scripts/system-packages.sh)");
        Self(child, dir)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_example_haproxy_config_is_valid() {
    let out = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg"))
        .output()
        .expect("haproxy is installed (scripts/system-packages.sh)");
    assert!(out.status.success(), "{out:?}");
}

/// Every answer the clients got: its status and body.
type Answers = Arc<Mutex<Vec<(u16, String)>>>;

/// A client calling the sync task through the balancer in a loop until `stop`, at most `max`
/// calls.
async fn client(front: String, answers: Answers, stop: Arc<AtomicBool>, max: usize) {
    let http = reqwest::Client::new();
    for _ in 0..max {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let answer = match http.post(&front).send().await {
            Ok(resp) => (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ),
            Err(e) => (0, e.to_string()),
        };
        answers.lock().unwrap().push(answer);
    }
}

/// Waits until a call answered after the first `after` answers was served by `name`.
async fn served_by(answers: &Answers, after: usize, name: &str) {
    let mark = format!("served by {name}");
    poll(Duration::from_secs(30), || {
        let seen = answers.lock().unwrap()[after..]
            .iter()
            .any(|(_, body)| body.contains(&mark));
        async move { seen.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_each_replica_in_turn_under_load_fails_no_call() {
    rolling_restart(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_delay_alone_keeps_calls_away_from_a_replica_that_refuses_runs() {
    rolling_restart(false).await;
}

/// Restarts each replica in turn while four clients call a 0.3 s sync task through HAProxy;
/// asserts that every call was answered 200 and that a draining replica's `/readyz` says why.
async fn rolling_restart(retry_503: bool) {
    let http = reqwest::Client::new();
    let ports = [free_port(), free_port()];
    let mut replicas = [Replica::start("a", ports[0]), Replica::start("b", ports[1])];
    for r in &mut replicas {
        r.ready(&http).await;
    }
    let front = free_port();
    let _haproxy = HaProxy::start(front, ports, retry_503);
    let ping = format!("http://127.0.0.1:{front}/ping");
    poll(Duration::from_secs(20), || {
        let answer = http.get(&ping).send();
        async move { answer.await.is_ok_and(|r| r.status() == 200).then_some(()) }
    })
    .await;

    let answers: Answers = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{front}/sync/lb/slow");
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client(url.clone(), answers.clone(), stop.clone(), 400)))
        .collect();
    let began = Instant::now();
    for i in 0..2 {
        let other = replicas[1 - i].name;
        // The other replica takes calls before this one goes.
        let now = answers.lock().unwrap().len();
        served_by(&answers, now, other).await;
        let r = &mut replicas[i];
        r.terminate();
        // Draining: /readyz fails and says why, while runs are still started.
        draining_readyz(&http, r).await;
        r.restart().await;
        r.ready(&http).await;
        let now = answers.lock().unwrap().len();
        served_by(&answers, now, r.name).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let answers = answers.lock().unwrap();
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, body)| *status != 200 || !body.contains(r#""code":0"#))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed in {:?}: {failed:?}",
        failed.len(),
        answers.len(),
        began.elapsed()
    );
    assert!(answers.len() >= 20, "only {} calls", answers.len());
}

/// `/readyz` of a draining replica: 503, and the detail says why. Polled for up to 2 s after
/// the signal; the last answer is shown if it never says so.
async fn draining_readyz(http: &reqwest::Client, r: &Replica) -> Value {
    let readyz = r.url("/readyz");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http.get(&readyz).send().await {
            Ok(resp) if resp.status() == 503 => {
                let body: Value = resp.json().await.unwrap();
                let text = body.to_string();
                assert!(
                    body["ready"] == false && text.contains("draining"),
                    "{text}"
                );
                return body;
            }
            Ok(resp) => last = format!("{}: {}", resp.status(), resp.text().await.unwrap()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{} did not answer /readyz 503 within 2 s; last: {last}",
        r.name
    );
}

#[tokio::test]
async fn while_draining_runs_still_start_and_a_second_signal_hurries() {
    let http = reqwest::Client::new();
    let mut r = Replica::with_drain_delay("a", free_port(), "60s");
    r.ready(&http).await;
    r.terminate();
    let body = draining_readyz(&http, &r).await;
    assert!(body.to_string().contains("still started"), "{body}");
    let resp = http.post(r.url("/sync/lb/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("served by a"));
    // A second signal ends the drain delay at once: the replica stops well before 60 s.
    r.signal(Signal::SIGINT);
    let began = Instant::now();
    let child = &mut r.child;
    let status = poll(Duration::from_secs(15), || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status}");
    assert!(began.elapsed() < Duration::from_secs(15));
}
