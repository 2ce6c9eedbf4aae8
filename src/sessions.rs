//! Async sessions: their ids and states, kill requests, and retention of finished ones.
//!
//! A session is inserted before its id is returned, so an immediate query finds it. A finished
//! session is removed only a retention period after it *ended*, so a poller never misses a
//! result; a running one is never removed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Local};
use poem_openapi::Object;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::logs::lock;
use crate::runner::{RunResult, Stop, StopReason};

/// What a poller sees of a session.
#[derive(Debug, Clone, Object, PartialEq)]
pub struct SessionInfo {
    /// Session id (UUID v4).
    pub id: Uuid,
    /// The last stdout line (for a built-in task, its result once done).
    pub message: String,
    /// "" on success, the failure text otherwise.
    pub error: String,
    /// Whether the run has ended.
    pub done: bool,
    /// When the run started (RFC 3339 with offset).
    pub start_at: DateTime<Local>,
    /// When the run ended; null while it runs.
    #[oai(nullable)]
    pub end_at: Option<DateTime<Local>>,
    /// The exit code of an external task that exited by itself; null otherwise.
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    /// The task's path, e.g. `tendb-cluster/demo1`.
    pub task: String,
    /// The POSTed arguments (array for external tasks, object for built-in ones).
    pub args: Value,
}

struct Entry {
    info: SessionInfo,
    cancel: Stop,
    finished: CancellationToken,
    ended: Option<Instant>,
}

/// Every known session.
pub struct SessionStore {
    map: Mutex<HashMap<Uuid, Entry>>,
    retention: Duration,
}

/// Why a kill did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KillError {
    /// No session has that id (never existed, or cleaned after its retention).
    #[error("session {0} not found")]
    NotFound(Uuid),
}

impl SessionStore {
    /// A store that keeps finished sessions for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            retention,
        }
    }

    /// Registers a new running session and returns its id and kill token.
    pub fn create(&self, task: String, args: Value) -> (Uuid, Stop) {
        let id = Uuid::new_v4();
        let cancel = Stop::new();
        self.create_for(id, cancel.clone(), task, args);
        (id, cancel)
    }

    /// Registers a new running session with the id and stop handle its run was admitted with.
    pub fn create_for(&self, id: Uuid, cancel: Stop, task: String, args: Value) {
        let info = SessionInfo {
            id,
            message: String::new(),
            error: String::new(),
            done: false,
            start_at: Local::now(),
            end_at: None,
            exit_code: None,
            task,
            args,
        };
        lock(&self.map).insert(
            id,
            Entry {
                info,
                cancel: cancel.clone(),
                finished: CancellationToken::new(),
                ended: None,
            },
        );
    }

    /// Records the latest output line of a running session as its `message`.
    pub fn progress(&self, id: Uuid, message: String) {
        if let Some(e) = lock(&self.map).get_mut(&id) {
            if !e.info.done {
                e.info.message = message;
            }
        }
    }

    /// Marks a session done with how its run ended: `message` is the result's `data`, `error`
    /// is `""` on success and the failure text otherwise.
    pub fn finish(&self, id: Uuid, result: RunResult) {
        if let Some(e) = lock(&self.map).get_mut(&id) {
            e.info.done = true;
            e.info.end_at = Some(Local::now());
            e.info.error = result.error().to_string();
            e.info.message = result.data;
            e.info.exit_code = result.exit_code;
            e.ended = Some(Instant::now());
            e.finished.cancel();
        }
    }

    /// One session.
    pub fn get(&self, id: Uuid) -> Option<SessionInfo> {
        lock(&self.map).get(&id).map(|e| e.info.clone())
    }

    /// Every session, newest first.
    pub fn all(&self) -> Vec<SessionInfo> {
        let mut all: Vec<SessionInfo> = lock(&self.map).values().map(|e| e.info.clone()).collect();
        all.sort_by(|a, b| b.start_at.cmp(&a.start_at).then(b.id.cmp(&a.id)));
        all
    }

    /// Asks a session to stop and waits (up to `wait`) until it has; returns its state then.
    pub async fn kill(&self, id: Uuid, wait: Duration) -> Result<SessionInfo, KillError> {
        let finished = {
            let map = lock(&self.map);
            let e = map.get(&id).ok_or(KillError::NotFound(id))?;
            e.cancel.stop(StopReason::Killed);
            e.finished.clone()
        };
        let _ = tokio::time::timeout(wait, finished.cancelled()).await;
        self.get(id).ok_or(KillError::NotFound(id))
    }

    /// Cancels every running session (shutdown).
    pub fn cancel_all(&self) {
        for e in lock(&self.map).values() {
            e.cancel.stop(StopReason::Shutdown);
        }
    }

    /// Removes sessions that ended more than the retention period ago; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut map = lock(&self.map);
        let before = map.len();
        map.retain(|_, e| match e.ended {
            Some(ended) => now.duration_since(ended) < self.retention,
            None => true,
        });
        before - map.len()
    }

    /// How often [`Self::sweep`] should run for this retention.
    pub fn sweep_interval(&self) -> Duration {
        (self.retention / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn running_sessions_survive_sweeps_finished_ones_expire() {
        let store = SessionStore::new(Duration::from_millis(100));
        let (running, _) = store.create("a/b".into(), Value::Null);
        let (ended, _) = store.create("a/b".into(), Value::Null);
        store.finish(ended, RunResult::success(String::new(), String::new()));
        assert_eq!(store.sweep(), 0, "removed before its retention passed");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(store.sweep(), 1);
        assert!(store.get(running).is_some());
        assert!(store.get(ended).is_none());
    }

    #[tokio::test]
    async fn kill_of_unknown_session_says_so() {
        let store = SessionStore::new(Duration::from_secs(1));
        let id = Uuid::new_v4();
        assert_eq!(
            store.kill(id, Duration::from_millis(1)).await,
            Err(KillError::NotFound(id))
        );
    }
}
