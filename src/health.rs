//! Readiness: the checks `GET /readyz` runs, each cheap and answering at once.
//!
//! The served config is always checked (see [`config_check`]); other parts (the result store's
//! "connected or spooling") add theirs with [`Readiness::add`] at startup.

use std::sync::{Arc, Mutex};

use poem_openapi::Object;

use crate::logs::lock;
use crate::reload::ConfigStatus;

/// One check's verdict.
#[derive(Debug, Clone, Object)]
pub struct Check {
    /// What was checked (`config`, `store`, …).
    pub name: String,
    /// Whether it lets the service take traffic.
    pub ready: bool,
    /// What was found, in words.
    pub detail: String,
}

/// A check added by another part of the service.
pub type ReadinessCheck = Arc<dyn Fn() -> Check + Send + Sync>;

/// The checks added at startup, and whether the service is draining for shutdown.
#[derive(Default)]
pub struct Readiness {
    checks: Mutex<Vec<ReadinessCheck>>,
    draining: Mutex<Option<String>>,
}

impl Readiness {
    /// Adds a check that every `/readyz` runs from now on.
    pub fn add(&self, check: ReadinessCheck) {
        lock(&self.checks).push(check);
    }

    /// From now on `/readyz` fails with a `shutdown` check whose detail is `detail`: the
    /// service is draining, and a load balancer should send its calls elsewhere.
    pub fn set_draining(&self, detail: String) {
        *lock(&self.draining) = Some(detail);
    }

    /// Runs every added check (and the failing `shutdown` one once draining).
    pub fn run(&self) -> Vec<Check> {
        let checks = lock(&self.checks).clone();
        let mut verdicts: Vec<Check> = checks.iter().map(|c| c()).collect();
        if let Some(detail) = lock(&self.draining).clone() {
            verdicts.push(Check {
                name: "shutdown".into(),
                ready: false,
                detail,
            });
        }
        verdicts
    }
}

/// The served config's check. A service whose config was broken at startup never listens (it
/// exits non-zero naming every error), so `/readyz` cannot be reached and the probe fails. Once
/// serving, a rejected reload leaves it READY: the previous config keeps serving, and marking
/// every replica unready after one bad ConfigMap edit would turn a rejected edit into an outage.
/// The detail says that the newest file was rejected, and why.
pub fn config_check(status: &ConfigStatus) -> Check {
    let detail = match &status.last_error {
        None => format!(
            "serving generation {} ({} tasks)",
            status.generation, status.task_count
        ),
        Some(e) => format!(
            "serving generation {}; the newest file was rejected at {}: {}",
            status.generation, e.at, e.message
        ),
    };
    Check {
        name: "config".into(),
        ready: true,
        detail,
    }
}
