//! The maintenance loop, on any [`Backend`]: heartbeat of this process's running records, kill
//! requests from other replicas, marking runs of replicas that stopped heartbeating `lost`
//! (the takeover of their records), and the retention sweep.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::backend::Backend;
use super::record::{now_ms, Owner};
use super::writer::TICK;
use super::StoreSettings;

/// Maintenance ticks between retention sweeps.
const SWEEP_EVERY: u32 = 20;
/// Maintenance ticks between searches for lost runs.
const LOST_EVERY: u32 = 4;

/// Called with a session id another replica asked this one to kill.
pub type KillHook = Arc<dyn Fn(Uuid) + Send + Sync>;

/// The loop's inputs.
pub struct Maintenance {
    /// Where the records are.
    pub backend: Arc<dyn Backend>,
    /// For `--replica-timeout` and `--result-retention`.
    pub settings: StoreSettings,
    /// This process.
    pub owner: Owner,
    /// Kills a session here.
    pub kill: KillHook,
}

impl Maintenance {
    /// Runs every [`TICK`] until aborted; errors are logged at debug level (a database that is
    /// down is already reported by the writer), and the next tick tries again.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(TICK);
        let mut n: u32 = 0;
        // A heartbeat rewrites every running record of this process, so it comes four times per
        // --replica-timeout rather than every tick (it costs a write per running record).
        let every = (self.settings.replica_timeout.as_millis() / (4 * TICK.as_millis())).max(1);
        let heartbeat_every = u32::try_from(every).unwrap_or(u32::MAX);
        loop {
            tick.tick().await;
            let now = now_ms();
            if n % heartbeat_every == 0 {
                if let Err(e) = self.backend.heartbeat(&self.owner.instance, now).await {
                    tracing::debug!(error = %e, "heartbeat");
                }
            }
            self.kill_requested().await;
            if n % LOST_EVERY == 0 {
                self.mark_lost(now).await;
            }
            if n % SWEEP_EVERY == 0 {
                self.sweep(now).await;
            }
            n = n.wrapping_add(1);
        }
    }

    /// Kills the sessions of this process that another replica asked to kill.
    async fn kill_requested(&self) {
        match self.backend.kill_requests(&self.owner.instance).await {
            Ok(ids) => {
                for raw in ids {
                    match Uuid::parse_str(&raw) {
                        Ok(id) => {
                            tracing::info!(session_id = %id, "kill requested by another replica");
                            (self.kill)(id);
                        }
                        Err(e) => {
                            tracing::warn!(session_id = %raw, error = %e, "a kill request for a session id that is not a UUID is ignored");
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "kill requests"),
        }
    }

    /// Marks running records of replicas that stopped heartbeating as lost.
    async fn mark_lost(&self, now: i64) {
        let timeout = self.settings.replica_timeout;
        let stale = now.saturating_sub(millis(timeout));
        let error = format!(
            "lost: the service that ran it stopped heartbeating for {}",
            humantime::format_duration(timeout)
        );
        match self.backend.mark_lost(stale, now, &error).await {
            Ok(0) => {}
            Ok(k) => tracing::warn!(
                records = k,
                "runs of a replica that stopped are marked lost"
            ),
            Err(e) => tracing::debug!(error = %e, "marking lost runs"),
        }
    }

    /// Deletes ended records past `--result-retention`.
    async fn sweep(&self, now: i64) {
        let before = now.saturating_sub(millis(self.settings.retention));
        match self.backend.purge(before).await {
            Ok(0) => {}
            Ok(k) => tracing::info!(records = k, "results past --result-retention deleted"),
            Err(e) => tracing::debug!(error = %e, "retention sweep"),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
