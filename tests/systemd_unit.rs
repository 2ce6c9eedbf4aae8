//! The systemd unit in deploy/ parses (`systemd-analyze verify`), delegates the cgroup, stops
//! with `KillMode=mixed`, and gives the service longer to stop than its drain delay and shutdown
//! timeout.
//! Needs `systemd-analyze` (the `systemd` package; CI installs it): without it the test fails
//! under CI and is skipped, saying so, elsewhere.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/celery-service.service");
    std::fs::read_to_string(path).unwrap()
}

/// The value of `Key=` in the unit.
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn the_unit_delegates_its_cgroup_and_stops_after_the_drain_and_shutdown_timeout() {
    let text = unit_text();
    assert_eq!(value(&text, "Delegate"), "yes");
    assert_eq!(value(&text, "KillMode"), "mixed");
    let stop = humantime::parse_duration(value(&text, "TimeoutStopSec")).unwrap();
    let env = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("Environment={name}=")))
            .map(|v| humantime::parse_duration(v).unwrap())
    };
    let shutdown = env("CS_SHUTDOWN_TIMEOUT").unwrap_or(Duration::from_secs(30));
    let grace = env("CS_KILL_GRACE").unwrap_or(Duration::from_secs(3));
    let drain = env("CS_DRAIN_DELAY").unwrap_or(Duration::from_secs(5));
    assert!(
        stop > drain + shutdown + grace,
        "TimeoutStopSec {stop:?} <= {drain:?} + {shutdown:?} + {grace:?}"
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if analyze.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing under CI: .ci/run installs the systemd package"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let text = unit_text().replace(
        "/usr/local/bin/celery-service",
        env!("CARGO_BIN_EXE_celery-service"),
    );
    let unit = dir.path().join("celery-service.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only lines about our unit count (a container's own units may have warnings of their own).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("celery-service.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}
