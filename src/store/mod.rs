//! The result store: every run's record, kept so that no result is lost.
//!
//! - [`Store`] (here): what the rest of the service calls. [`Store::put`] only puts a record
//!   on the queue; it never waits for the database, and a database error never fails it.
//! - [`backend`]: the [`Backend`] trait every backend implements, and [`Kind`], the one list of
//!   backends.
//! - [`embedded`]: SQLite in one local file (the default); [`sqlite`] holds its queries.
//! - [`mongo`]: MongoDB through the official driver (`--db-address`), behind the spool.
//! - [`off`]: `--no-result-store`; every "off" answer of the store comes from it.
//! - [`spool`]: the local buffer wrapped around a remote backend while it is unreachable.
//! - [`writer`]: the bounded queue and the batch writer; [`maintenance`]: heartbeat, kill
//!   requests from other replicas, lost runs of stopped replicas, retention. Both see the
//!   backend only through the trait.
//! - [`record`]: the stored record; [`state`]: the typed state and `/-/store`'s answer;
//!   [`settings`]: the flags and the connection strings.
//!
//! **Adding a backend** is one file and one variant: a new `src/store/<name>.rs` with a type
//! implementing [`Backend`] and its `profile` and `open` functions (a remote one wraps itself
//! in [`spool::Spooled`] in `open`, as [`mongo::open`] does), and one variant of [`Kind`] in
//! `src/store/backend.rs`, with its arm in `Kind::of`, `Kind::profile` and `Kind::open`.

pub mod backend;
pub mod embedded;
pub mod maintenance;
pub mod mongo;
pub mod off;
pub mod record;
pub mod settings;
pub mod spool;
pub mod sqlite;
pub mod state;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::logs::lock;
use crate::sessions::SessionInfo;
pub use backend::{Backend, History, Kind, Profile};
pub use maintenance::KillHook;
pub use record::{Owner, Record, Start};
pub use settings::{Secret, StoreSettings};
pub use state::{StoreState, StoreStatus};
use writer::{Queue, Stats};

/// How often `remote_kill` reads the record of the session it asked to kill.
const KILL_POLL: Duration = Duration::from_millis(100);

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded file cannot be opened.
    #[error("cannot open the result store {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// An SQLite call failed.
    #[error("result store (SQLite): {0}")]
    Sqlite(String),
    /// A MongoDB call failed (the text never holds the password).
    #[error("result store (MongoDB): {0}")]
    Mongo(String),
    /// The store is not started yet.
    #[error("the result store is not started")]
    NotStarted,
    /// The service runs with `--no-result-store`.
    #[error("the result store is off (--no-result-store): results are kept in memory only")]
    Off,
}

/// The result store of one service.
pub struct Store {
    settings: StoreSettings,
    kind: Kind,
    profile: Profile,
    owner: Owner,
    /// `None` when the backend keeps no records.
    queue: Option<Queue>,
    rx: Mutex<Option<tokio::sync::mpsc::Receiver<Record>>>,
    stats: Arc<Stats>,
    backend: OnceLock<Arc<dyn Backend>>,
    tasks: Mutex<Option<Running>>,
}

impl Store {
    /// A store for `settings`; nothing is opened until [`Store::start`].
    pub fn new(settings: StoreSettings) -> Self {
        let kind = Kind::of(&settings);
        let profile = kind.profile(&settings);
        let stats = Arc::new(Stats::default());
        let (queue, rx) = if profile.keeps_records {
            let (queue, rx) = Queue::new(stats.clone());
            (Some(queue), Some(rx))
        } else {
            (None, None)
        };
        Self {
            settings,
            kind,
            profile,
            owner: Owner::current(),
            queue,
            rx: Mutex::new(rx),
            stats,
            backend: OnceLock::new(),
            tasks: Mutex::new(None),
        }
    }

    /// Who this process is.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// `CS_RESULT_DB_URI` for scripts.
    pub fn child_uri(&self) -> &str {
        &self.profile.child_uri
    }

    /// `CS_DB_NAME` for scripts.
    pub fn db_name(&self) -> &str {
        &self.settings.db_name
    }

    /// Opens the backend and starts the writer and the maintenance loop (when it keeps
    /// records). A remote database that is down does not stop the start: records spool until
    /// it answers.
    pub async fn start(&self, kill: KillHook) -> Result<(), StoreError> {
        let backend = self.kind.open(&self.settings).await?;
        if self.backend.set(backend.clone()).is_err() {
            tracing::warn!("the result store was started twice; the second start is ignored");
            return Ok(());
        }
        let Some(rx) = lock(&self.rx).take() else {
            return Ok(());
        };
        let closing = CancellationToken::new();
        let writer = writer::Writer::new(backend.clone(), self.stats.clone());
        let maintenance = maintenance::Maintenance {
            backend,
            settings: self.settings.clone(),
            owner: self.owner.clone(),
            kill,
        };
        *lock(&self.tasks) = Some(Running {
            writer: tokio::spawn(writer.run(rx, closing.clone())),
            maintenance: tokio::spawn(maintenance.run()),
            closing,
        });
        Ok(())
    }

    /// Queues a record; never waits and never fails. A full queue hands the record to a task
    /// of its own that waits for room, so even then it is not dropped. A backend that keeps no
    /// records has no queue.
    pub fn put(&self, record: Record) {
        if let Some(queue) = &self.queue {
            queue.put(record);
        }
    }

    fn backend(&self) -> Result<&Arc<dyn Backend>, StoreError> {
        self.backend.get().ok_or(StoreError::NotStarted)
    }

    /// One record: from the database, else from the spool (written here, not yet replayed).
    pub async fn get(&self, id: Uuid) -> Result<Option<Record>, StoreError> {
        self.backend()?.get(&id.to_string()).await
    }

    /// Records newest first.
    pub async fn history(&self, h: History) -> Result<Vec<Record>, StoreError> {
        self.backend()?.history(&h).await
    }

    /// Kills a session another replica owns: asks its owner through the store and waits (up
    /// to `wait`) until its record says it ended. `None`: no such record.
    pub async fn remote_kill(
        &self,
        id: Uuid,
        wait: Duration,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let backend = self.backend()?;
        let key = id.to_string();
        let Some(record) = backend.get(&key).await? else {
            return Ok(None);
        };
        if record.done {
            return Ok(Some(record.to_session()));
        }
        backend.request_kill(&key).await?;
        tracing::info!(session_id = %id, owner = %record.instance, "kill requested through the result store");
        let deadline = tokio::time::Instant::now() + wait;
        let mut last = record;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(KILL_POLL).await;
            if let Some(r) = backend.get(&key).await? {
                last = r;
                if last.done {
                    break;
                }
            }
        }
        Ok(Some(last.to_session()))
    }

    /// The store's state now.
    pub fn status(&self) -> StoreStatus {
        let (state, spool_size, backend_error) = match self.backend.get() {
            Some(b) => {
                let c = b.condition();
                (c.state, c.spool_size, c.last_error)
            }
            None => (self.profile.state, 0, None),
        };
        StoreStatus {
            backend: self.profile.name.into(),
            location: self.profile.location.clone(),
            state,
            queue_depth: self.stats.queued.load(Ordering::Relaxed) as u64,
            spool_size,
            last_error: lock(&self.stats.last_error).clone().or(backend_error),
            instance: self.owner.instance.clone(),
        }
    }

    /// Stops taking records, writes (or spools) every queued one, and stops the loops; waits
    /// at most `limit`.
    pub async fn close(&self, limit: Duration) {
        let running = lock(&self.tasks).take();
        if let Some(running) = running {
            running.close(limit).await;
        }
    }
}

/// The writer and maintenance tasks of a started store.
struct Running {
    closing: CancellationToken,
    writer: JoinHandle<()>,
    maintenance: JoinHandle<()>,
}

impl Running {
    /// Flushes or spools what is queued, then stops; waits at most `limit`.
    async fn close(self, limit: Duration) {
        self.closing.cancel();
        self.maintenance.abort();
        if tokio::time::timeout(limit, self.writer).await.is_err() {
            tracing::error!(
                "the result writer did not finish within {limit:?}; queued records may be lost"
            );
        }
    }
}

#[cfg(test)]
mod tests;
