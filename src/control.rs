//! Run control: which runs may start (overlap policy, `--max-running`, shutdown draining), which
//! async call repeats an earlier one (`Idempotency-Key`), how long a run may take (timeouts),
//! and how the service drains its runs when it is asked to stop.
//!
//! Every run, sync or async, holds a [`Slot`] from the moment it is admitted to its end; the
//! slots are the one list of active runs that `forbid`, `replace`, `--max-running` and shutdown
//! look at. Runs are ended early only through their [`Stop`], so their `end_run` does the rest.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem_openapi::Object;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::ConcurrencyPolicy;
use crate::logs::lock;
use crate::runner::tracking::Tracking;
use crate::runner::{Stop, StopReason};
use crate::table::{Task, TaskKind};

/// How long an old run being replaced may take to end before the new one starts anyway, on top
/// of the kill grace.
const REPLACE_SETTLE: Duration = Duration::from_secs(5);

/// The run-control settings, as `GET /-/config` shows them.
#[derive(Debug, Clone, Object)]
pub struct RunControlConfig {
    /// How every process of a run is found: `cgroup` or `subreaper`.
    pub process_tracking: String,
    /// The same, in words, with where and why.
    pub process_tracking_detail: String,
    /// `--default-timeout` (e.g. `30m`); null when runs have no default limit.
    #[oai(nullable)]
    pub default_timeout: Option<String>,
    /// `--max-running`; null when unlimited.
    #[oai(nullable)]
    pub max_running: Option<u64>,
    /// `--idempotency-window`.
    pub idempotency_window: String,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: String,
}

/// Why a run was not started.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// `concurrency_policy: forbid` and a run of the task is active.
    #[error("task {task} is already running as session {session} (concurrency_policy: forbid)")]
    Busy {
        /// The task's path.
        task: String,
        /// The running session.
        session: Uuid,
    },
    /// `--max-running` runs are active.
    #[error("{0} runs are active, the most --max-running allows; try again later")]
    TooMany(usize),
    /// The service is shutting down.
    #[error("the service is shutting down and starts no new runs")]
    Draining,
    /// The `Idempotency-Key` was first used for another task.
    #[error("Idempotency-Key `{key}` was already used for task {task}")]
    KeyOfOtherTask {
        /// The key.
        key: String,
        /// The task it was used for.
        task: String,
    },
}

struct Active {
    task: String,
    stop: Stop,
    ended: CancellationToken,
}

/// The service's run control.
pub struct Control {
    /// How the processes of a run are found.
    pub tracking: Option<Tracking>,
    default_timeout: Option<Duration>,
    max_running: Option<usize>,
    idempotency_window: Duration,
    shutdown_timeout: Duration,
    active: Mutex<HashMap<Uuid, Active>>,
    idle: Notify,
    draining: AtomicBool,
    hurry: CancellationToken,
    keys: Mutex<HashMap<String, (String, Uuid, Instant)>>,
}

/// Settings of [`Control`], from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Timeout of a task that has none of its own.
    pub default_timeout: Option<Duration>,
    /// Most runs at once.
    pub max_running: Option<usize>,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
    /// How long shutdown waits for runs to finish before ending them.
    pub shutdown_timeout: Duration,
}

/// One admitted run: its session id and stop handle; dropped when the run is over.
pub struct Slot {
    control: Arc<Control>,
    /// The run's session id.
    pub id: Uuid,
    /// Stops the run.
    pub stop: Stop,
    /// Runs this one replaces: it starts once they have ended.
    replaced: Vec<CancellationToken>,
    ended: CancellationToken,
}

impl Slot {
    /// Waits until the runs this one replaces have ended (at most `grace` plus a settle time).
    pub async fn replaced_ended(&self, grace: Duration) {
        let all = async {
            for ended in &self.replaced {
                ended.cancelled().await;
            }
        };
        let _ = tokio::time::timeout(grace + REPLACE_SETTLE, all).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.ended.cancel();
        let mut active = lock(&self.control.active);
        active.remove(&self.id);
        if active.is_empty() {
            self.control.idle.notify_waiters();
        }
    }
}

impl Control {
    /// Run control with `limits` and the process `tracking` set up at startup.
    pub fn new(limits: Limits, tracking: Option<Tracking>) -> Arc<Self> {
        Arc::new(Self {
            tracking,
            default_timeout: limits.default_timeout,
            max_running: limits.max_running,
            idempotency_window: limits.idempotency_window,
            shutdown_timeout: limits.shutdown_timeout,
            active: Mutex::new(HashMap::new()),
            idle: Notify::new(),
            draining: AtomicBool::new(false),
            hurry: CancellationToken::new(),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// The settings as `GET /-/config` shows them.
    pub fn config(&self) -> RunControlConfig {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        RunControlConfig {
            process_tracking: self
                .tracking
                .as_ref()
                .map_or("process-group", |t| t.mechanism().as_str())
                .to_string(),
            process_tracking_detail: self
                .tracking
                .as_ref()
                .map_or_else(|| "process group only".to_string(), Tracking::describe),
            default_timeout: self.default_timeout.map(human),
            max_running: self.max_running.map(|n| n as u64),
            idempotency_window: human(self.idempotency_window),
            shutdown_timeout: human(self.shutdown_timeout),
        }
    }

    /// Admits a new run of `task`, or says why not. With `concurrency_policy: replace`, the
    /// active runs of the task are stopped (their sessions say `replaced by <new id>`).
    pub fn admit(self: &Arc<Self>, task: &Task) -> Result<Slot, Refusal> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Refusal::Draining);
        }
        let id = Uuid::new_v4();
        let mut active = lock(&self.active);
        let same = || active.iter().filter(|(_, a)| a.task == task.path);
        let mut replaced = Vec::new();
        match policy(task) {
            ConcurrencyPolicy::Allow => {}
            ConcurrencyPolicy::Forbid => {
                if let Some((session, _)) = same().min_by_key(|(id, _)| **id) {
                    return Err(Refusal::Busy {
                        task: task.path.clone(),
                        session: *session,
                    });
                }
            }
            ConcurrencyPolicy::Replace => replaced = same().map(|(_, a)| a.ended.clone()).collect(),
        }
        if let Some(max) = self.max_running {
            if active.len() - replaced.len() >= max {
                return Err(Refusal::TooMany(max));
            }
        }
        if !replaced.is_empty() {
            for a in active.values().filter(|a| a.task == task.path) {
                a.stop.stop(StopReason::Replaced(id));
            }
        }
        let stop = Stop::new();
        let ended = CancellationToken::new();
        active.insert(
            id,
            Active {
                task: task.path.clone(),
                stop: stop.clone(),
                ended: ended.clone(),
            },
        );
        Ok(Slot {
            control: self.clone(),
            id,
            stop,
            replaced,
            ended,
        })
    }

    /// Starts a keyed async call once: a key seen within the window for the same task answers
    /// with the session it started (`Ok((id, true))`); for another task it is refused.
    pub fn once(
        &self,
        key: &str,
        task: &str,
        start: impl FnOnce() -> Result<Uuid, Refusal>,
    ) -> Result<(Uuid, bool), Refusal> {
        let mut keys = lock(&self.keys);
        let now = Instant::now();
        keys.retain(|_, (_, _, at)| now.duration_since(*at) < self.idempotency_window);
        if let Some((first_task, id, _)) = keys.get(key) {
            if first_task != task {
                return Err(Refusal::KeyOfOtherTask {
                    key: key.to_string(),
                    task: first_task.clone(),
                });
            }
            return Ok((*id, true));
        }
        let id = start()?;
        keys.insert(key.to_string(), (task.to_string(), id, now));
        Ok((id, false))
    }

    /// The time limit of a run of `task`: its own `timeout`, else `--default-timeout`.
    pub fn timeout(&self, task: &Task) -> Option<Duration> {
        match &task.kind {
            TaskKind::External { task, .. } => task.timeout.or(self.default_timeout),
            TaskKind::Builtin(_) => self.default_timeout,
        }
    }

    /// Whether the service is draining for shutdown.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ends the shutdown wait at once (a second SIGTERM or SIGINT).
    pub fn hurry(&self) {
        self.hurry.cancel();
    }

    /// Resolves once [`Self::hurry`] has been called.
    pub async fn hurried(&self) {
        self.hurry.cancelled().await;
    }

    /// Shutdown: refuses new runs at once, lets active runs finish for up to
    /// `--shutdown-timeout` (or until [`Self::hurry`]), then stops the rest with
    /// [`StopReason::Shutdown`]. Returns once they have been asked to stop.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        let deadline = Instant::now() + self.shutdown_timeout;
        let running = lock(&self.active).len();
        if running > 0 {
            tracing::info!(
                running,
                "shutting down: no new runs; waiting up to {} for the active ones",
                humantime::format_duration(self.shutdown_timeout)
            );
        }
        loop {
            let idle = self.idle.notified();
            if lock(&self.active).is_empty() {
                return;
            }
            tokio::select! {
                () = idle => {}
                () = tokio::time::sleep_until(deadline) => break,
                () = self.hurry.cancelled() => {
                    tracing::info!("second signal: not waiting any longer");
                    break;
                }
            }
        }
        let active = lock(&self.active);
        tracing::warn!(
            running = active.len(),
            "ending the runs still active at shutdown"
        );
        for a in active.values() {
            a.stop.stop(StopReason::Shutdown);
        }
    }
}

/// The task's concurrency policy (built-in tasks allow overlap).
fn policy(task: &Task) -> ConcurrencyPolicy {
    match &task.kind {
        TaskKind::External { task, .. } => task.concurrency_policy,
        TaskKind::Builtin(_) => ConcurrencyPolicy::Allow,
    }
}

/// Runs `run` with `stop` asked to stop for [`StopReason::TimedOut`] once `limit` has passed;
/// the run then ends as a kill ends it.
pub async fn limited<T>(run: impl Future<Output = T>, stop: &Stop, limit: Option<Duration>) -> T {
    let Some(limit) = limit else {
        return run.await;
    };
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r,
        () = tokio::time::sleep(limit) => {
            stop.stop(StopReason::TimedOut(limit));
            run.await
        }
    }
}
