//! The one registry of live runs: which runs are active, each with its stop handle and latest
//! output line, and the admission rules that read it (overlap policy, `--max-running`,
//! `--max-sessions`, shutdown). A run is in the registry from its admission to its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Local};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::events::{Mode, RunInfo};
use crate::config::ConcurrencyPolicy;
use crate::logs::lock;
use crate::runner::{RunResult, Stop, StopReason};
use crate::table::{Task, TaskKind};

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
    /// `--max-sessions` sessions are held.
    #[error("the service holds {0} sessions (--max-sessions); finished ones are removed after --session-retention")]
    TooManySessions(usize),
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

/// What the registry holds of one live run; shared with the run itself.
pub struct Live {
    /// Which run, of which task, with what.
    pub info: Arc<RunInfo>,
    /// Stops the run.
    pub stop: Stop,
    /// Cancelled once the run is over and its end published.
    pub ended: CancellationToken,
    /// The latest stdout line (a built-in task: its latest log line).
    pub latest: Mutex<String>,
    /// The run's result and when it ended, set just before it leaves the registry.
    pub result: OnceLock<(Arc<RunResult>, DateTime<Local>)>,
}

impl Live {
    fn is_async(&self) -> bool {
        self.info.mode == Mode::Async
    }
}

/// The live runs.
#[derive(Default)]
pub struct Registry {
    runs: Mutex<HashMap<Uuid, Arc<Live>>>,
    idle: Notify,
    draining: AtomicBool,
}

/// Limits that admission checks.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// `--max-running`.
    pub max_running: Option<usize>,
    /// `--max-sessions` (async runs held, live and retained).
    pub max_sessions: usize,
}

/// A run just admitted: its entry, and the ends of the runs it replaces.
pub struct Admitted {
    /// Its registry entry.
    pub live: Arc<Live>,
    /// Runs this one replaces: it starts once they have ended.
    pub replaced: Vec<CancellationToken>,
}

impl Registry {
    /// Admits the run `info`, or says why not. `retained` is how many ended sessions are held.
    /// With `concurrency_policy: replace`, the task's active runs are asked to stop.
    pub fn admit(
        &self,
        info: Arc<RunInfo>,
        limits: Admission,
        retained: usize,
    ) -> Result<Admitted, Refusal> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Refusal::Draining);
        }
        let mut runs = lock(&self.runs);
        if info.mode == Mode::Async {
            let sessions = retained + runs.values().filter(|l| l.is_async()).count();
            if sessions >= limits.max_sessions {
                return Err(Refusal::TooManySessions(limits.max_sessions));
            }
        }
        let (id, task) = (info.id, &*info.task);
        let same = || runs.iter().filter(|(_, l)| l.info.task.path == task.path);
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
            ConcurrencyPolicy::Replace => {
                replaced = same().map(|(_, l)| l.ended.clone()).collect();
            }
        }
        if let Some(max) = limits.max_running {
            if runs.len() - replaced.len() >= max {
                return Err(Refusal::TooMany(max));
            }
        }
        if !replaced.is_empty() {
            for (_, l) in same() {
                l.stop.stop(StopReason::Replaced(id));
            }
        }
        let live = Arc::new(Live {
            info,
            stop: Stop::new(),
            ended: CancellationToken::new(),
            latest: Mutex::new(String::new()),
            result: OnceLock::new(),
        });
        runs.insert(id, live.clone());
        Ok(Admitted { live, replaced })
    }

    /// Removes a run that is over.
    pub fn remove(&self, id: Uuid) {
        let mut runs = lock(&self.runs);
        if let Some(live) = runs.remove(&id) {
            live.ended.cancel();
        }
        if runs.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// One live run.
    pub fn get(&self, id: Uuid) -> Option<Arc<Live>> {
        lock(&self.runs).get(&id).cloned()
    }

    /// Every live run.
    pub fn all(&self) -> Vec<(Uuid, Arc<Live>)> {
        lock(&self.runs)
            .iter()
            .map(|(id, l)| (*id, l.clone()))
            .collect()
    }

    /// How many runs are live.
    pub fn len(&self) -> usize {
        lock(&self.runs).len()
    }

    /// Whether no run is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every live run to stop for `reason`; returns how many were asked.
    pub fn stop_all(&self, reason: &StopReason) -> usize {
        let runs = lock(&self.runs);
        for live in runs.values() {
            live.stop.stop(reason.clone());
        }
        runs.len()
    }

    /// From now on, every new run is refused with [`Refusal::Draining`].
    pub fn refuse_new(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun ([`Self::refuse_new`] was called).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Resolves once no run is live.
    pub async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.is_empty() {
                return;
            }
            idle.await;
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
