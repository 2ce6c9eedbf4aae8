//! What a poller sees of an async session ([`SessionInfo`]), and the retention of ended ones.
//!
//! Live sessions are not kept here: they are the async runs in the supervisor's registry, and
//! `/async/query` reads them there. When a session ends it moves here, and stays until a
//! retention period after it *ended*, so a poller never misses a result.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Local};
use poem_openapi::Object;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::logs::lock;

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

impl SessionInfo {
    /// Newest first, as `/async/query` lists sessions.
    pub fn newest_first(all: &mut [SessionInfo]) {
        all.sort_by(|a, b| b.start_at.cmp(&a.start_at).then(b.id.cmp(&a.id)));
    }
}

/// Ended sessions, kept for the retention period.
pub struct Retained {
    map: Mutex<HashMap<Uuid, (SessionInfo, Instant)>>,
    retention: Duration,
}

impl Retained {
    /// Keeps ended sessions for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            retention,
        }
    }

    /// Keeps a session that has just ended.
    pub fn insert(&self, info: SessionInfo) {
        lock(&self.map).insert(info.id, (info, Instant::now()));
    }

    /// One ended session.
    pub fn get(&self, id: Uuid) -> Option<SessionInfo> {
        lock(&self.map).get(&id).map(|(info, _)| info.clone())
    }

    /// Every ended session, in no order.
    pub fn all(&self) -> Vec<SessionInfo> {
        lock(&self.map)
            .values()
            .map(|(info, _)| info.clone())
            .collect()
    }

    /// Removes sessions that ended more than the retention period ago; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut map = lock(&self.map);
        let before = map.len();
        map.retain(|_, (_, ended)| now.duration_since(*ended) < self.retention);
        before - map.len()
    }

    /// How often [`Self::sweep`] should run for this retention.
    pub fn sweep_interval(&self) -> Duration {
        (self.retention / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
    }

    /// How many ended sessions are held.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(id: Uuid) -> SessionInfo {
        SessionInfo {
            id,
            message: String::new(),
            error: String::new(),
            done: true,
            start_at: Local::now(),
            end_at: Some(Local::now()),
            exit_code: Some(0),
            task: "a/b".into(),
            args: Value::Null,
        }
    }

    #[tokio::test]
    async fn ended_sessions_expire_after_their_retention() {
        let retained = Retained::new(Duration::from_millis(100));
        let id = Uuid::new_v4();
        retained.insert(ended(id));
        assert_eq!(retained.sweep(), 0, "removed before its retention passed");
        assert!(retained.get(id).is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(retained.sweep(), 1);
        assert!(retained.get(id).is_none());
    }
}
