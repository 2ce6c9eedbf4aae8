//! What every result-store backend implements ([`Backend`]), what it says about itself before it
//! is opened ([`Profile`]) and now ([`Condition`]), and the one list of backends ([`Kind`]).
//!
//! The writer, the maintenance loop and [`super::Store`] see a backend only through this trait.

use std::sync::Arc;

use async_trait::async_trait;

use super::record::Record;
use super::state::StoreState;
use super::{embedded, mongo, off, StoreError, StoreSettings};

/// Filter and page of `GET /results`.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Only this task path.
    pub task: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// At most this many.
    pub limit: i64,
    /// Only records older than this `(start_ms, session_id)`.
    pub before: Option<(i64, String)>,
}

/// What a backend is, known from the settings alone (nothing is opened to know it).
#[derive(Debug, Clone)]
pub struct Profile {
    /// `embedded`, `mongodb`, `off`: the `backend` of `/-/store`.
    pub name: &'static str,
    /// Where records go, without the password: the `location` of `/-/store`.
    pub location: String,
    /// `CS_RESULT_DB_URI` for scripts (with the password).
    pub child_uri: String,
    /// Whether records are kept at all; when not, the store has no queue, writer or
    /// maintenance loop.
    pub keeps_records: bool,
    /// The state shown before the backend is opened.
    pub state: StoreState,
}

/// How a backend is doing now, for `/-/store` and `/readyz`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Connected, spooling or off.
    pub state: StoreState,
    /// Records waiting in a spool for the remote database.
    pub spool_size: u64,
    /// The backend's last error, while it lasts.
    pub last_error: Option<String>,
}

impl Condition {
    /// Records go straight to the backend; nothing waits, nothing failed.
    pub fn connected() -> Self {
        Self {
            state: StoreState::Connected,
            spool_size: 0,
            last_error: None,
        }
    }
}

/// A place records are written to and read from. Every call may fail with a [`StoreError`];
/// the caller decides what then happens to the records (the writer retries, never drops).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// How it is doing now; a backend without a spool of its own is always connected (its
    /// failures are the writer's last error).
    fn condition(&self) -> Condition {
        Condition::connected()
    }

    /// Upserts a batch by session id. An ended record always wins; a running one never replaces
    /// an ended one, so a replay in any order cannot undo an end.
    async fn write(&self, batch: &[Record]) -> Result<(), StoreError>;

    /// One record.
    async fn get(&self, session_id: &str) -> Result<Option<Record>, StoreError>;

    /// Records newest first, filtered as `h` says.
    async fn history(&self, h: &History) -> Result<Vec<Record>, StoreError>;

    /// Asks the owner of a running record to kill it; whether a running record was found.
    async fn request_kill(&self, session_id: &str) -> Result<bool, StoreError>;

    /// Running sessions of `instance` another replica asked to kill.
    async fn kill_requests(&self, instance: &str) -> Result<Vec<String>, StoreError>;

    /// Says `instance` is alive in each of its running records.
    async fn heartbeat(&self, instance: &str, now: i64) -> Result<(), StoreError>;

    /// Marks running records whose heartbeat is older than `stale_before` as lost.
    async fn mark_lost(&self, stale_before: i64, now: i64, error: &str) -> Result<u64, StoreError>;

    /// Deletes ended records that started before `before`.
    async fn purge(&self, before: i64) -> Result<u64, StoreError>;

    /// Called by the writer on every tick: a spool replays what waits in it.
    async fn tick(&self) {}

    /// Called by the writer once the queue is drained at shutdown: a spool tries a last replay.
    async fn finish(&self) {}
}

/// The backends the settings can select. Adding a backend: one file with a type implementing
/// [`Backend`] and its `profile` and `open` functions, and one variant here (with its arm in
/// each of the three methods below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--no-result-store`: [`off`].
    Off,
    /// `--db-address`: MongoDB behind the spool, [`mongo`].
    Mongo,
    /// The default: SQLite in one local file, [`embedded`].
    Embedded,
}

impl Kind {
    /// The backend `settings` select.
    pub fn of(settings: &StoreSettings) -> Self {
        if settings.off {
            Self::Off
        } else if settings.address.is_some() {
            Self::Mongo
        } else {
            Self::Embedded
        }
    }

    /// What the backend is, before it is opened.
    pub fn profile(self, settings: &StoreSettings) -> Profile {
        match self {
            Self::Off => off::profile(settings),
            Self::Mongo => mongo::profile(settings),
            Self::Embedded => embedded::profile(settings),
        }
    }

    /// Opens the backend.
    pub async fn open(self, settings: &StoreSettings) -> Result<Arc<dyn Backend>, StoreError> {
        match self {
            Self::Off => off::open(settings).await,
            Self::Mongo => mongo::open(settings).await,
            Self::Embedded => embedded::open(settings).await,
        }
    }
}
