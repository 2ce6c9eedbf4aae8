//! `Idempotency-Key`: an async call repeated with the same key within the window answers with
//! the session the first call started instead of starting another.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::Refusal;
use crate::logs::lock;

/// The keys seen within the window: key → (task path, session, first seen).
pub struct Keys {
    window: Duration,
    seen: Mutex<HashMap<String, (String, Uuid, Instant)>>,
}

impl Keys {
    /// Keys remembered for `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a keyed call once: a key seen within the window for the same task answers with the
    /// session it started (`Ok((id, true))`); for another task it is refused.
    pub fn once(
        &self,
        key: &str,
        task: &str,
        start: impl FnOnce() -> Result<Uuid, Refusal>,
    ) -> Result<(Uuid, bool), Refusal> {
        let mut seen = lock(&self.seen);
        let now = Instant::now();
        seen.retain(|_, (_, _, at)| now.duration_since(*at) < self.window);
        if let Some((first_task, id, _)) = seen.get(key) {
            if first_task != task {
                return Err(Refusal::KeyOfOtherTask {
                    key: key.to_string(),
                    task: first_task.clone(),
                });
            }
            return Ok((*id, true));
        }
        let id = start()?;
        seen.insert(key.to_string(), (task.to_string(), id, now));
        Ok((id, false))
    }
}
