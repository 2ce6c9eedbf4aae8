//! The spool: a [`Backend`] wrapped around any remote backend. While the remote database is
//! unreachable, records are appended, in order, to the `spool` table of the local SQLite file;
//! once it answers again they are replayed oldest first. A record is written to the remote
//! database before it leaves the spool, so a crash in between only replays it again, which the
//! upsert by session id makes harmless.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::backend::{Backend, Condition, History};
use super::record::Record;
use super::sqlite::{blocking, Sqlite};
use super::state::StoreState;
use super::writer::{coalesce, BATCH};
use super::StoreError;
use crate::logs::lock;

/// A remote backend with a local spool in front of it.
pub struct Spooled<B> {
    remote: B,
    spool: Arc<Sqlite>,
    /// Records wait in the spool: new ones go behind them, so that they stay in order.
    spooling: AtomicBool,
    spooled: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl<B: Backend> Spooled<B> {
    /// Opens the spool file in front of `remote`; records an earlier run left in it are
    /// replayed once `remote` answers.
    pub async fn open(remote: B, file: &Path) -> Result<Self, StoreError> {
        let spool = Sqlite::open_shared(file).await?;
        // An unreadable spool may hold records: new ones queue behind them until a replay
        // reads it, rather than overtake them.
        let (spooling, waiting) = match blocking(&spool, |db| db.spool_len()).await {
            Ok(0) => (false, 0),
            Ok(n) => {
                tracing::info!(
                    records = n,
                    "results spooled by an earlier run will be replayed"
                );
                (true, n)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the result spool; records spool until it reads");
                (true, 0)
            }
        };
        Ok(Self {
            remote,
            spool,
            spooling: AtomicBool::new(spooling),
            spooled: AtomicU64::new(waiting),
            last_error: Mutex::new(None),
        })
    }

    fn set_error(&self, error: Option<String>) {
        *lock(&self.last_error) = error;
    }

    /// Appends `batch` to the spool; an error leaves the records with the caller (the writer
    /// retries them).
    async fn append(&self, batch: &[Record]) -> Result<(), StoreError> {
        let n = batch.len() as u64;
        let b = batch.to_vec();
        blocking(&self.spool, move |db| db.spool(&b)).await?;
        self.spooled.fetch_add(n, Ordering::Relaxed);
        self.spooling.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Replays the spool oldest first; stops at the first failure (the rest waits).
    async fn replay(&self) {
        let mut replayed = 0u64;
        loop {
            let chunk = match blocking(&self.spool, |db| db.spooled(BATCH)).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the result spool");
                    return;
                }
            };
            let Some(&(last, _)) = chunk.last() else {
                self.spooled.store(0, Ordering::Relaxed);
                self.spooling.store(false, Ordering::Relaxed);
                self.set_error(None);
                if replayed > 0 {
                    tracing::info!(
                        records = replayed,
                        "MongoDB answers again; the spool is replayed"
                    );
                }
                return;
            };
            let n = chunk.len() as u64;
            let records = coalesce(chunk.into_iter().map(|(_, r)| r).collect());
            if let Err(e) = self.remote.write(&records).await {
                self.set_error(Some(e.to_string()));
                tracing::debug!(error = %e, "MongoDB still unreachable");
                return;
            }
            if let Err(e) = blocking(&self.spool, move |db| db.unspool(last)).await {
                tracing::error!(error = %e, "cannot trim the result spool");
                return;
            }
            replayed += n;
            let _ = self
                .spooled
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    Some(s.saturating_sub(n))
                });
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for Spooled<B> {
    fn condition(&self) -> Condition {
        let remote = self.remote.condition();
        Condition {
            state: if self.spooling.load(Ordering::Relaxed) {
                StoreState::Spooling
            } else {
                remote.state
            },
            spool_size: self.spooled.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone().or(remote.last_error),
        }
    }

    /// Straight to the remote database; to the end of the spool while it holds records (so
    /// they stay in order) or when the remote write fails.
    async fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        if !self.spooling.load(Ordering::Relaxed) {
            match self.remote.write(batch).await {
                Ok(()) => {
                    self.set_error(None);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "MongoDB write failed; spooling results until it answers");
                    self.set_error(Some(e.to_string()));
                }
            }
        }
        self.append(batch).await
    }

    /// The spool first: a record written here and not yet replayed is newer than the remote's.
    async fn get(&self, session_id: &str) -> Result<Option<Record>, StoreError> {
        let key = session_id.to_string();
        match blocking(&self.spool, move |db| db.spooled_get(&key)).await? {
            Some(r) => Ok(Some(r)),
            None => self.remote.get(session_id).await,
        }
    }

    async fn history(&self, h: &History) -> Result<Vec<Record>, StoreError> {
        self.remote.history(h).await
    }

    async fn request_kill(&self, session_id: &str) -> Result<bool, StoreError> {
        self.remote.request_kill(session_id).await
    }

    async fn kill_requests(&self, instance: &str) -> Result<Vec<String>, StoreError> {
        self.remote.kill_requests(instance).await
    }

    async fn heartbeat(&self, instance: &str, now: i64) -> Result<(), StoreError> {
        self.remote.heartbeat(instance, now).await
    }

    async fn mark_lost(&self, stale_before: i64, now: i64, error: &str) -> Result<u64, StoreError> {
        self.remote.mark_lost(stale_before, now, error).await
    }

    async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        self.remote.purge(before).await
    }

    async fn tick(&self) {
        if self.spooling.load(Ordering::Relaxed) {
            self.replay().await;
        }
        self.remote.tick().await;
    }

    async fn finish(&self) {
        self.tick().await;
        let left = self.spooled.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                records = left,
                "results left in the spool; replayed at the next start"
            );
        }
        self.remote.finish().await;
    }
}
