//! A config replaced the moment the service's port opens is served, every time, even with the
//! CPU busy: the service watches the file before it listens, and compares it with the loaded
//! text once the watch is in place.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OLD: &str =
    "- {name: before, cluster_type: t, language: sh, executable: echo before, collected: false}\n";
const NEW: &str =
    "- {name: after, cluster_type: t, language: sh, executable: echo after, collected: false}\n";

/// Child processes killed when dropped: the busy loops and the services.
struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_config_replaced_as_the_port_opens_is_served_every_time() {
    // Three busy processes, so the service's threads compete for the CPU.
    let _busy = Killed(
        (0..3)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "exec yes > /dev/null"])
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for attempt in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("external-tasks.yaml");
        std::fs::write(&config, OLD).unwrap();
        let port = free_port();
        let service = Command::new(common::binary())
            .current_dir(dir.path())
            .args(["run", "--address", &format!("127.0.0.1:{port}")])
            .env_remove("CS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut service = Killed(vec![service]);
        // The moment the port accepts a connection, replace the file (write + rename).
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "attempt {attempt}: never listened"
            );
            if let Ok(Some(st)) = service.0[0].try_wait() {
                panic!("attempt {attempt}: the service exited: {st}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let tmp = dir.path().join("external-tasks.yaml.tmp");
        std::fs::write(&tmp, NEW).unwrap();
        std::fs::rename(&tmp, &config).unwrap();
        let url = format!("http://127.0.0.1:{port}/sync/t/after");
        common::poll(Duration::from_secs(10), || async {
            let resp = http.post(&url).send().await.ok()?;
            (resp.status() == 200).then_some(())
        })
        .await;
        // The service is killed as `service` goes out of scope.
    }
}
