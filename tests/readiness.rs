//! The probes through the real binary: `/healthz` and `/readyz` answer, a rejected reload stays
//! ready and says why, and a config broken at startup never gets to answer.

mod common;

use std::time::Duration;

use common::{poll, Server, OPS_TASKS};

#[tokio::test]
async fn health_and_readiness() {
    let s = Server::start(OPS_TASKS, &["--auth-token=t"]);
    let (st, v) = s.get("/healthz").await;
    assert_eq!((st, v["ready"].as_bool()), (200, Some(true)), "{v}");
    let (st, v) = s.get("/readyz").await;
    assert_eq!((st, v["ready"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["checks"][0]["name"], "config");
    // A broken reload keeps the old config serving: still ready, and the body says why.
    std::fs::write(s.path("external-tasks.yaml"), "- {name: broken").unwrap();
    poll(Duration::from_secs(10), || async {
        let (st, v) = s.get("/readyz").await;
        let detail = v["checks"][0]["detail"].as_str().unwrap_or("").to_string();
        (st == 200 && detail.contains("rejected")).then_some(())
    })
    .await;

    // A config broken at startup: the service exits non-zero and nothing ever answers /readyz.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("external-tasks.yaml"), "- {name: broken").unwrap();
    let out = std::process::Command::new(common::binary())
        .current_dir(dir.path())
        .args(["run", "--address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
