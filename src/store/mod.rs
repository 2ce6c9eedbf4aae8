//! The result store: every run's record, kept so that no result is lost.
//!
//! - [`record`]: the record type and how it reads as a session.
//! - [`sqlite`]: the embedded store (SQLite, the default), which is also the spool.
//! - [`mongo`]: MongoDB through the official driver (`--db-address`).
//! - [`writer`]: the bounded queue, the batching writer, the spool and its replay, and the
//!   maintenance loop (heartbeat, kill requests from other replicas, lost runs, retention).
//!
//! A request only puts a record on the queue ([`Store::put`]); it never waits for the
//! database, and a database error never fails it.

pub mod mongo;
pub mod record;
pub mod sqlite;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use poem_openapi::Object;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::logs::lock;
use crate::sessions::SessionInfo;
pub use record::{Owner, Record, Start};

/// How many records may wait for the writer before puts go through a task each.
const QUEUE: usize = 65_536;

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

/// A password, kept out of every `Debug`, log line and error.
#[derive(Clone, Default)]
pub struct Secret(Option<String>);

impl Secret {
    /// Wraps a password.
    pub fn new(password: Option<String>) -> Self {
        Self(password.filter(|p| !p.is_empty()))
    }

    /// The password: `password` if given, else the one inside a `mongodb://user:pw@…` address.
    pub fn of(password: Option<String>, address: Option<&str>) -> Self {
        let embedded = address.and_then(|a| {
            let rest = a.split_once("://")?.1;
            let userinfo = rest.split('/').next()?.rsplit_once('@')?.0;
            let pw = userinfo.split_once(':')?.1;
            percent_encoding::percent_decode_str(pw)
                .decode_utf8()
                .ok()
                .map(|p| p.into_owned())
        });
        Self::new(password.or(embedded))
    }

    /// `text` with the password (as typed and percent-encoded) replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        match &self.0 {
            Some(p) => text.replace(&encode(p), "***").replace(p.as_str(), "***"),
            None => text.to_string(),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "***" } else { "None" })
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Where records go, from the `--db-*` and `--result-*` flags.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `--db-address`: `host:port` or a full `mongodb://` URI; `None` = the embedded store.
    pub address: Option<String>,
    /// `--db-user`.
    pub user: Option<String>,
    /// `--db-password`.
    pub password: Secret,
    /// `--db-name`.
    pub db_name: String,
    /// `--result-db-file`: the embedded store, or the spool when MongoDB is used.
    pub file: PathBuf,
    /// `--result-retention`: ended records older than this are deleted.
    pub retention: Duration,
    /// `--replica-timeout`: running records whose owner has not heartbeated for this long are
    /// marked lost.
    pub replica_timeout: Duration,
    /// `--no-result-store`: no record is written anywhere.
    pub off: bool,
}

impl StoreSettings {
    /// The connection string with the password, as scripts get it in `CS_RESULT_DB_URI`
    /// (`file:<path>` for the embedded store).
    pub fn uri(&self) -> String {
        self.build_uri(false)
    }

    /// The connection string with the password as `***`, for logs and `/-/store`.
    pub fn redacted_uri(&self) -> String {
        self.password.redact(&self.build_uri(true))
    }

    fn build_uri(&self, redact: bool) -> String {
        let password = match &self.password.0 {
            Some(_) if redact => Some("***".to_string()),
            Some(p) => Some(encode(p)),
            None => None,
        };
        let Some(address) = &self.address else {
            return format!("file:{}", self.file.display());
        };
        let credentials = match (&self.user, password) {
            (Some(user), Some(p)) => format!("{}:{p}@", encode(user)),
            (Some(user), None) => format!("{}@", encode(user)),
            (None, _) => String::new(),
        };
        for scheme in ["mongodb://", "mongodb+srv://"] {
            if let Some(rest) = address.strip_prefix(scheme) {
                let authority = rest.split('/').next().unwrap_or("");
                if authority.contains('@') {
                    return address.clone();
                }
                return format!("{scheme}{credentials}{rest}");
            }
        }
        format!("mongodb://{credentials}{address}/")
    }
}

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

/// The store's state, as `GET /-/store` shows it.
#[derive(Debug, Clone, Object)]
pub struct StoreStatus {
    /// `embedded`, `mongodb`, or `off` (`--no-result-store`).
    pub backend: String,
    /// Where records go: the file, or the MongoDB URI with the password as `***`; empty when off.
    pub location: String,
    /// `connected`, `spooling` (MongoDB unreachable; records wait in the spool), or `off`.
    pub state: String,
    /// Records waiting in the queue for the writer.
    pub queue_depth: u64,
    /// Records waiting in the spool for MongoDB.
    pub spool_size: u64,
    /// The last write error, if the last write failed.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// This process's instance id (owner of its records).
    pub instance: String,
}

/// Counters the writer updates and the status reads.
#[derive(Default)]
struct Shared {
    spooling: AtomicBool,
    queued: AtomicUsize,
    spooled: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Called with a session id another replica asked this one to kill.
pub type KillHook = Arc<dyn Fn(Uuid) + Send + Sync>;

/// The result store of one service.
pub struct Store {
    settings: StoreSettings,
    owner: Owner,
    tx: mpsc::Sender<Record>,
    rx: Mutex<Option<mpsc::Receiver<Record>>>,
    backend: OnceLock<writer::Backend>,
    shared: Arc<Shared>,
    tasks: Mutex<Option<writer::Running>>,
    uri: String,
}

impl Store {
    /// A store for `settings`; nothing is opened until [`Store::start`].
    pub fn new(settings: StoreSettings) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            uri: if settings.off {
                String::new()
            } else {
                settings.uri()
            },
            settings,
            owner: Owner::current(),
            tx,
            rx: Mutex::new(Some(rx)),
            backend: OnceLock::new(),
            shared: Arc::default(),
            tasks: Mutex::new(None),
        }
    }

    /// Who this process is.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// `CS_RESULT_DB_URI` for scripts.
    pub fn child_uri(&self) -> &str {
        &self.uri
    }

    /// `CS_DB_NAME` for scripts.
    pub fn db_name(&self) -> &str {
        &self.settings.db_name
    }

    /// Opens the backend and starts the writer and the maintenance loop. A MongoDB that is
    /// down does not stop the start: records spool until it answers.
    pub async fn start(&self, kill: KillHook) -> Result<(), StoreError> {
        if self.settings.off {
            tracing::warn!("result store: off (--no-result-store); results are kept in memory only, until --session-retention");
            return Ok(());
        }
        let backend = writer::Backend::open(&self.settings).await?;
        let _ = self.backend.set(backend.clone());
        let Some(rx) = lock(&self.rx).take() else {
            return Ok(());
        };
        let running = writer::spawn(
            backend,
            rx,
            self.shared.clone(),
            self.settings.clone(),
            self.owner.clone(),
            kill,
        );
        *lock(&self.tasks) = Some(running);
        Ok(())
    }

    /// Queues a record; never waits and never fails. A full queue hands the record to a task
    /// of its own that waits for room, so even then it is not dropped.
    pub fn put(&self, record: Record) {
        if self.settings.off {
            return;
        }
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(record)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(record).await.is_err() {
                        tracing::error!("a result record came after the store closed");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(record)) => {
                tracing::error!(session_id = %record.session_id, "a result record came after the store closed");
            }
        }
    }

    fn backend(&self) -> Result<&writer::Backend, StoreError> {
        if self.settings.off {
            return Err(StoreError::Off);
        }
        self.backend.get().ok_or(StoreError::NotStarted)
    }

    /// One record: from the database, else from the spool (written here, not yet replayed).
    /// With the store off there is none: the session is only known while it is in memory.
    pub async fn get(&self, id: Uuid) -> Result<Option<Record>, StoreError> {
        if self.settings.off {
            return Ok(None);
        }
        self.backend()?.get(&id.to_string()).await
    }

    /// Records newest first.
    pub async fn history(&self, h: History) -> Result<Vec<Record>, StoreError> {
        self.backend()?.history(h).await
    }

    /// Kills a session another replica owns: asks its owner through the store and waits (up
    /// to `wait`) until its record says it ended. `None`: no such record.
    pub async fn remote_kill(
        &self,
        id: Uuid,
        wait: Duration,
    ) -> Result<Option<SessionInfo>, StoreError> {
        if self.settings.off {
            return Ok(None);
        }
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
            tokio::time::sleep(Duration::from_millis(100)).await;
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
        let (backend, location, state) = match (self.settings.off, &self.settings.address) {
            (true, _) => ("off", String::new(), "off"),
            (false, address) => (
                if address.is_some() {
                    "mongodb"
                } else {
                    "embedded"
                },
                self.settings.redacted_uri(),
                if self.shared.spooling.load(Ordering::Relaxed) {
                    "spooling"
                } else {
                    "connected"
                },
            ),
        };
        StoreStatus {
            backend: backend.into(),
            location,
            state: state.into(),
            queue_depth: self.shared.queued.load(Ordering::Relaxed) as u64,
            spool_size: self.shared.spooled.load(Ordering::Relaxed),
            last_error: lock(&self.shared.last_error).clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        address: Option<&str>,
        user: Option<&str>,
        password: Option<&str>,
    ) -> StoreSettings {
        StoreSettings {
            address: address.map(Into::into),
            user: user.map(Into::into),
            password: Secret::new(password.map(Into::into)),
            db_name: "cs".into(),
            file: "results.sqlite3".into(),
            retention: Duration::from_secs(1),
            replica_timeout: Duration::from_secs(1),
            off: false,
        }
    }

    #[test]
    fn uris_carry_credentials_and_redact_the_password() {
        let s = settings(Some("db:27017"), Some("u@x"), Some("p:w/d"));
        assert_eq!(s.uri(), "mongodb://u%40x:p%3Aw%2Fd@db:27017/");
        assert_eq!(s.redacted_uri(), "mongodb://u%40x:***@db:27017/");
        assert!(!format!("{s:?}").contains("p:w/d"));
        assert_eq!(
            s.password.redact("bad p%3Aw%2Fd and p:w/d"),
            "bad *** and ***"
        );
        let full = settings(Some("mongodb://h1,h2/?replicaSet=r"), Some("u"), Some("pw"));
        assert_eq!(full.uri(), "mongodb://u:pw@h1,h2/?replicaSet=r");
        let mut given = settings(Some("mongodb://a:s3cret@h/"), Some("u"), None);
        given.password = Secret::of(None, given.address.as_deref());
        assert_eq!(given.uri(), "mongodb://a:s3cret@h/");
        assert_eq!(given.redacted_uri(), "mongodb://a:***@h/");
        assert_eq!(settings(Some("h:1"), None, None).uri(), "mongodb://h:1/");
        assert_eq!(settings(None, None, None).uri(), "file:results.sqlite3");
    }
}
