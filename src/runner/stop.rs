//! Asking a run to stop, and why: the one handle that kill, client hang-up and shutdown (and
//! whatever else ends runs early) use, so the run's result can say what ended it.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a run was ended before it finished by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// `POST /async/kill`.
    Killed,
    /// The sync caller hung up.
    ClientGone,
    /// The service is shutting down.
    Shutdown,
    /// The run took longer than its timeout.
    TimedOut(Duration),
    /// A newer run of the same task replaced it (the session id of the new run).
    Replaced(Uuid),
}

impl StopReason {
    /// A short, stable name for records and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Killed => "killed",
            Self::ClientGone => "cancelled",
            Self::Shutdown => "shutdown",
            Self::TimedOut(_) => "timed_out",
            Self::Replaced(_) => "replaced",
        }
    }
}

impl fmt::Display for StopReason {
    /// The failure text a stopped run answers with and its session shows as `error`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Killed => f.write_str("killed on request"),
            Self::ClientGone => f.write_str("cancelled: the client disconnected"),
            Self::Shutdown => f.write_str("stopped: the service shut down"),
            Self::TimedOut(after) => {
                write!(f, "timed out after {}", humantime::format_duration(*after))
            }
            Self::Replaced(by) => write!(f, "replaced by {by}"),
        }
    }
}

/// Stops one run. Cloned handles stop the same run; the first reason given is the one kept.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Stop {
    /// A handle for a new run.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop for `reason`; a run already asked keeps its first reason.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Whether the run has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the run has been asked to stop.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Why the run was asked to stop, once it has been.
    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_is_kept_and_each_reads_as_its_failure_text() {
        let stop = Stop::new();
        assert!(!stop.is_cancelled() && stop.reason().is_none());
        let clone = stop.clone();
        clone.stop(StopReason::TimedOut(Duration::from_secs(30)));
        stop.stop(StopReason::Killed);
        assert!(stop.is_cancelled());
        assert_eq!(stop.reason().unwrap().to_string(), "timed out after 30s");
        assert_eq!(
            StopReason::Shutdown.to_string(),
            "stopped: the service shut down"
        );
        let id = Uuid::nil();
        assert_eq!(
            StopReason::Replaced(id).to_string(),
            format!("replaced by {id}")
        );
    }
}
