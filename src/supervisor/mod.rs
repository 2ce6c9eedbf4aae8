//! The run supervisor: the one owner of a run's life.
//!
//! Every run, sync or async, external program or built-in task, goes the same way:
//! 1. **admission** ([`registry`]): the overlap policy, `--max-running`, `--max-sessions`,
//!    shutdown and `Idempotency-Key` ([`keys`]) decide; an admitted run is in the one registry
//!    of live runs, with its stop handle, from then to its end;
//! 2. **start** ([`run`]): after any run it replaces has ended, its [`Work`] starts, and
//!    [`RunEvent::Started`] is published;
//! 3. **stop**: every early end (kill, hang-up, timeout, replace, shutdown) is a [`StopReason`]
//!    given to the run's [`Stop`]; the work ends within the grace ([`deadlines`]);
//! 4. **finish** ([`run`]): the work's [`Ending`](crate::runner::Ending) becomes the run's one
//!    result ([`RunResult::finish`]), [`RunEvent::Ended`] is published, and the run leaves the
//!    registry.
//!
//! What else happens to a run (its log lines, metrics, result record, retained session) is done
//! by the [`observers`] of its [`events`]; a live view subscribes to the same events.

pub mod deadlines;
pub mod events;
mod keys;
pub mod observers;
pub mod registry;
mod run;
pub mod settings;
mod view;
pub mod work;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use deadlines::Deadlines;
pub use events::{Bus, LiveEvents, Mode, Observer, RunEvent, RunInfo};
pub use registry::{Live, Refusal};
pub use settings::{Limits, RunControlConfig};
pub use work::Work;

use crate::logs::{lock, TaskLogs};
use crate::runner::tracking::Tracking;
use crate::runner::{RunResult, StopReason};
use crate::sessions::{Retained, SessionInfo};
use crate::table::Task;
use crate::tasks::Prepared;

/// A request's body, checked against the task's parameters.
pub enum Input {
    /// Arguments for an external task.
    Args(Vec<String>),
    /// A ready built-in run and the parameters it was given.
    Builtin(Prepared, Value),
}

/// Why a kill did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KillError {
    /// No run or retained session has that id (never existed, ended past its retention, or
    /// another replica's).
    #[error("session {0} not found")]
    NotFound(Uuid),
}

/// What the supervisor is built from.
pub struct Parts {
    /// Run-control settings.
    pub limits: Limits,
    /// `--kill-grace`.
    pub grace: std::time::Duration,
    /// `--max-sessions`.
    pub max_sessions: usize,
    /// The retention of ended sessions (also an observer of the bus).
    pub retained: Arc<Retained>,
    /// The run events' observers (see [`observers`]).
    pub bus: Bus,
    /// Per-task logs.
    pub logs: Arc<TaskLogs>,
    /// How every process of a run is found.
    pub tracking: Option<Tracking>,
    /// Variables every external run gets (the result store's address for scripts).
    pub child_env: Vec<(&'static str, String)>,
}

/// Owns every run from admission to its end.
pub struct Supervisor {
    registry: registry::Registry,
    retained: Arc<Retained>,
    keys: keys::Keys,
    bus: Bus,
    tracker: TaskTracker,
    deadlines: Deadlines,
    limits: Limits,
    admission: registry::Admission,
    logs: Arc<TaskLogs>,
    tracking: Option<Arc<Tracking>>,
    child_env: Vec<(&'static str, String)>,
    hurry: CancellationToken,
}

impl Supervisor {
    /// A supervisor with no run yet.
    pub fn new(parts: Parts) -> Arc<Self> {
        let limits = parts.limits;
        Arc::new(Self {
            registry: registry::Registry::default(),
            retained: parts.retained,
            keys: keys::Keys::new(limits.idempotency_window),
            bus: parts.bus,
            tracker: TaskTracker::new(),
            deadlines: Deadlines {
                grace: parts.grace,
                shutdown: limits.shutdown_timeout,
                default_timeout: limits.default_timeout,
            },
            limits,
            admission: registry::Admission {
                max_running: limits.max_running,
                max_sessions: parts.max_sessions,
            },
            logs: parts.logs,
            tracking: parts.tracking.map(Arc::new),
            child_env: parts.child_env,
            hurry: CancellationToken::new(),
        })
    }

    /// The deadlines runs end by.
    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// How every process of a run is found (`None`: its process group only).
    pub fn tracking(&self) -> Option<&Tracking> {
        self.tracking.as_deref()
    }

    /// Runs `task` to its end and answers its result. If the caller goes away (`client_gone`
    /// resolves, or this future is dropped), the run is stopped and waited for.
    pub async fn run_sync(
        self: &Arc<Self>,
        task: Arc<Task>,
        input: Input,
        client_gone: impl Future<Output = ()>,
    ) -> Result<Arc<RunResult>, Refusal> {
        let (hang_up, mut handle) = self.spawn_sync(task, input)?;
        let joined = tokio::select! {
            r = &mut handle => { hang_up.disarm(); r }
            () = client_gone => {
                // Stopped through the guard (it logs why), then waited for until reaped.
                drop(hang_up);
                handle.await
            }
        };
        // The run's log records are in its file before its answer is sent.
        self.logs.flushed().await;
        Ok(joined.unwrap_or_else(|e| {
            Arc::new(RunResult::failure(
                String::new(),
                format!("the run failed inside the service: {e}"),
            ))
        }))
    }

    /// Starts `task` as an async session and answers its id; the session can be queried when
    /// this returns. With `key` (`Idempotency-Key`), a repeat within the window answers the
    /// first call's session.
    pub fn start_async(
        self: &Arc<Self>,
        task: Arc<Task>,
        input: Input,
        key: Option<&str>,
    ) -> Result<Uuid, Refusal> {
        let path = task.path.clone();
        let start = || self.spawn_async(task, input);
        match key {
            Some(key) => self.keys.once(key, &path, start).map(|(id, _)| id),
            None => start(),
        }
    }

    /// One session: an async run that is live, or one that ended within the retention.
    pub fn session(&self, id: Uuid) -> Option<SessionInfo> {
        if let Some(ended) = self.retained.get(id) {
            return Some(ended);
        }
        self.registry
            .get(id)
            .filter(|live| live.info.is_async())
            .map(|live| view::live(&live))
    }

    /// Every session (live async runs and those ended within the retention), newest first.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut all = self.retained.all();
        let ended: HashSet<Uuid> = all.iter().map(|s| s.id).collect();
        all.extend(
            self.registry
                .all()
                .into_iter()
                .filter(|(id, live)| live.info.is_async() && !ended.contains(id))
                .map(|(_, live)| view::live(&live)),
        );
        SessionInfo::newest_first(&mut all);
        all
    }

    /// How many sessions are held, live and ended.
    pub fn session_count(&self) -> usize {
        let live = self.registry.all();
        self.retained.len() + live.iter().filter(|(_, l)| l.info.is_async()).count()
    }

    /// Every live run, sync and async.
    pub fn live_runs(&self) -> Vec<Arc<Live>> {
        self.registry.all().into_iter().map(|(_, l)| l).collect()
    }

    /// A live view of every run's events from now on.
    pub fn subscribe(&self) -> LiveEvents {
        self.bus.subscribe()
    }

    /// Kills a run and waits (up to the grace plus the slack) until it has ended; answers its
    /// session then. A session that has already ended answers as it is.
    pub async fn kill(&self, id: Uuid) -> Result<SessionInfo, KillError> {
        let Some(live) = self.registry.get(id) else {
            return self.retained.get(id).ok_or(KillError::NotFound(id));
        };
        live.stop.stop(StopReason::Killed);
        let _ = tokio::time::timeout(self.deadlines.stopped_within(), live.ended.cancelled()).await;
        self.logs.flushed().await;
        Ok(match live.result.get() {
            Some((result, end_at)) => view::ended(&live.info, result, *end_at),
            None => view::live(&live),
        })
    }

    /// Removes sessions that ended more than the retention ago; returns how many.
    pub fn sweep_sessions(&self) -> usize {
        self.retained.sweep()
    }

    /// How often [`Self::sweep_sessions`] should run.
    pub fn sweep_interval(&self) -> std::time::Duration {
        self.retained.sweep_interval()
    }

    /// Whether shutdown has begun: new runs are refused, and live views that never end by
    /// themselves (the dashboard's event streams) should end so their connections can close.
    pub fn is_draining(&self) -> bool {
        self.registry.is_draining()
    }

    /// Ends the shutdown wait of [`Self::drain`] at once (a second SIGTERM or SIGINT).
    pub fn hurry(&self) {
        self.hurry.cancel();
    }

    /// Resolves once [`Self::hurry`] has been called.
    pub async fn hurried(&self) {
        self.hurry.cancelled().await;
    }

    /// Shutdown, first part: refuses new runs from now on, lets the active ones finish for up
    /// to `--shutdown-timeout` (or until [`Self::hurry`]), then asks the rest to stop.
    pub async fn drain(&self) {
        self.registry.refuse_new();
        let running = self.registry.len();
        if running > 0 {
            tracing::info!(
                running,
                "shutting down: no new runs; waiting up to {} for the active ones",
                humantime::format_duration(self.deadlines.shutdown)
            );
        }
        tokio::select! {
            () = self.registry.idle() => return,
            () = tokio::time::sleep(self.deadlines.shutdown) => {}
            () = self.hurry.cancelled() => tracing::info!("second signal: not waiting any longer"),
        }
        let running = self.registry.stop_all(&StopReason::Shutdown);
        tracing::warn!(running, "ending the runs still active at shutdown");
    }

    /// Shutdown, last part: stops every run still live and waits (up to the grace plus the
    /// slack) until each is reaped and recorded.
    pub async fn end_all(&self) {
        self.registry.stop_all(&StopReason::Shutdown);
        self.tracker.close();
        let limit = self.deadlines.stopped_within();
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some runs were still ending when the service stopped");
        }
        self.logs.flushed().await;
    }
}

/// A run's latest output line, kept for the session view and told to live views.
fn told(sup: &Arc<Supervisor>, live: &Arc<Live>) -> crate::runner::Progress {
    let (sup, live) = (Arc::downgrade(sup), live.clone());
    Arc::new(move |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        if let Some(sup) = sup.upgrade().filter(|s| s.bus.has_live_views()) {
            sup.bus.publish(RunEvent::Output {
                id: live.info.id,
                line: Arc::from(&*text),
            });
        }
        *lock(&live.latest) = text.into_owned();
    })
}
