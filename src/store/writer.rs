//! The writer: takes records off the bounded queue in batches, keeps the newest record of each
//! session in a batch, and writes them; while MongoDB is unreachable it appends them to the
//! spool and replays the spool, in order, once MongoDB answers again. Also the maintenance loop:
//! heartbeat of this process's running records, kill requests from other replicas, marking
//! runs of dead replicas `lost`, and the retention sweep.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::mongo::Mongo;
use super::record::{now_ms, Owner, Record};
use super::sqlite::Sqlite;
use super::{History, KillHook, Shared, StoreError, StoreSettings};
use crate::logs::lock;

/// Most records written in one batch.
const BATCH: usize = 512;
/// How often a spooling writer tries MongoDB again, and the maintenance loop runs.
const TICK: Duration = Duration::from_millis(500);
/// How long the writer waits for more records after the first of a batch (a group commit): the
/// start and end records of a short run then make one write, and a burst of runs one
/// transaction. Records are in the queue, not yet stored, during it, as they are while a write
/// goes on; a session's answers come from memory meanwhile.
const LINGER: Duration = Duration::from_millis(25);
/// Maintenance ticks between retention sweeps.
const SWEEP_EVERY: u32 = 20;

/// Where records are written.
#[derive(Clone)]
pub enum Backend {
    /// The embedded SQLite store.
    Embedded(Arc<Sqlite>),
    /// MongoDB, with the SQLite spool.
    Mongo(Mongo, Arc<Sqlite>),
}

/// Runs a blocking SQLite call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    db: &Arc<Sqlite>,
    f: impl FnOnce(&Sqlite) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| StoreError::Sqlite(e.to_string()))?
}

impl Backend {
    /// Opens the embedded file, and the MongoDB client when an address is given.
    pub async fn open(s: &StoreSettings) -> Result<Self, StoreError> {
        let file = s.file.clone();
        let sqlite = Arc::new(
            tokio::task::spawn_blocking(move || Sqlite::open(&file))
                .await
                .map_err(|e| StoreError::Sqlite(e.to_string()))??,
        );
        if s.address.is_none() {
            return Ok(Self::Embedded(sqlite));
        }
        let mongo = Mongo::new(&s.uri(), &s.db_name, s.password.clone()).await?;
        match mongo.ensure_indexes().await {
            Ok(()) => tracing::info!(uri = %s.redacted_uri(), "result store: MongoDB"),
            Err(e) => tracing::warn!(uri = %s.redacted_uri(), error = %e,
                "MongoDB is unreachable at startup; results spool to {} until it answers",
                s.file.display()),
        }
        Ok(Self::Mongo(mongo, sqlite))
    }

    async fn write(&self, batch: Vec<Record>) -> Result<(), StoreError> {
        match self {
            Self::Embedded(db) => blocking(db, move |db| db.write(&batch)).await,
            Self::Mongo(m, _) => m.write(&batch).await,
        }
    }

    /// One record; a MongoDB store also looks in its spool.
    pub async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let key = id.to_string();
        match self {
            Self::Embedded(db) => blocking(db, move |db| db.get(&key)).await,
            Self::Mongo(m, spool) => {
                let spooled = blocking(spool, move |db| db.spooled_get(&key)).await?;
                match spooled {
                    Some(r) => Ok(Some(r)),
                    None => m.get(id).await,
                }
            }
        }
    }

    /// Records newest first.
    pub async fn history(&self, h: History) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::Embedded(db) => blocking(db, move |db| db.history(&h)).await,
            Self::Mongo(m, _) => m.history(&h).await,
        }
    }

    /// Marks a running record for its owner to kill.
    pub async fn request_kill(&self, id: &str) -> Result<bool, StoreError> {
        let key = id.to_string();
        match self {
            Self::Embedded(db) => blocking(db, move |db| db.request_kill(&key)).await,
            Self::Mongo(m, _) => m.request_kill(id).await,
        }
    }

    async fn kill_requests(&self, instance: &str) -> Result<Vec<String>, StoreError> {
        let who = instance.to_string();
        match self {
            Self::Embedded(db) => blocking(db, move |db| db.kill_requests(&who)).await,
            Self::Mongo(m, _) => m.kill_requests(instance).await,
        }
    }

    async fn heartbeat(&self, instance: &str, now: i64) -> Result<(), StoreError> {
        let who = instance.to_string();
        match self {
            Self::Embedded(db) => blocking(db, move |db| db.heartbeat(&who, now)).await,
            Self::Mongo(m, _) => m.heartbeat(instance, now).await,
        }
    }

    async fn mark_lost(&self, stale_before: i64, error: String) -> Result<u64, StoreError> {
        let now = now_ms();
        match self {
            Self::Embedded(db) => {
                blocking(db, move |db| db.mark_lost(stale_before, now, &error)).await
            }
            Self::Mongo(m, _) => m.mark_lost(stale_before, now, &error).await,
        }
    }

    async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        match self {
            Self::Embedded(db) => blocking(db, move |db| db.purge(before)).await,
            Self::Mongo(m, _) => m.purge(before).await,
        }
    }

    fn spool(&self) -> Option<&Arc<Sqlite>> {
        match self {
            Self::Embedded(_) => None,
            Self::Mongo(_, spool) => Some(spool),
        }
    }
}

/// The newest record of each session in `batch`, in first-seen order; an ended record is never
/// replaced by a running one.
fn coalesce(batch: Vec<Record>) -> Vec<Record> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(batch.len());
    let mut out: Vec<Record> = Vec::with_capacity(batch.len());
    for r in batch {
        match index.get(&r.session_id) {
            Some(&i) => {
                if r.done || !out[i].done {
                    out[i] = r;
                }
            }
            None => {
                index.insert(r.session_id.clone(), out.len());
                out.push(r);
            }
        }
    }
    out
}

/// The writer and maintenance tasks of a started store.
pub struct Running {
    closing: CancellationToken,
    writer: JoinHandle<()>,
    maintenance: JoinHandle<()>,
}

impl Running {
    /// Flushes or spools what is queued, then stops; waits at most `limit`.
    pub async fn close(self, limit: Duration) {
        self.closing.cancel();
        self.maintenance.abort();
        if tokio::time::timeout(limit, self.writer).await.is_err() {
            tracing::error!(
                "the result writer did not finish within {limit:?}; queued records may be lost"
            );
        }
    }
}

/// Starts the writer and the maintenance loop.
pub fn spawn(
    backend: Backend,
    rx: mpsc::Receiver<Record>,
    shared: Arc<Shared>,
    settings: StoreSettings,
    owner: Owner,
    kill: KillHook,
) -> Running {
    let closing = CancellationToken::new();
    let writer = tokio::spawn(Writer::new(backend.clone(), shared).run(rx, closing.clone()));
    let maintenance = tokio::spawn(maintain(backend, settings, owner, kill));
    Running {
        closing,
        writer,
        maintenance,
    }
}

struct Writer {
    backend: Backend,
    shared: Arc<Shared>,
}

impl Writer {
    fn new(backend: Backend, shared: Arc<Shared>) -> Self {
        Self { backend, shared }
    }

    async fn run(self, mut rx: mpsc::Receiver<Record>, closing: CancellationToken) {
        if let Some(spool) = self.backend.spool() {
            match blocking(spool, |db| db.spool_len()).await {
                Ok(n) if n > 0 => {
                    tracing::info!(
                        records = n,
                        "results spooled by an earlier run will be replayed"
                    );
                    self.shared.spooled.store(n, Ordering::Relaxed);
                    self.shared.spooling.store(true, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot read the result spool"),
            }
        }
        let mut tick = tokio::time::interval(TICK);
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let until = tokio::time::Instant::now() + LINGER;
                    while buf.len() < BATCH {
                        let room = BATCH - buf.len();
                        let more = rx.recv_many(&mut buf, room);
                        match tokio::time::timeout_at(until, more).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    self.handle(std::mem::take(&mut buf)).await;
                }
                _ = tick.tick() => {
                    if self.shared.spooling.load(Ordering::Relaxed) {
                        self.replay().await;
                    }
                }
                () = closing.cancelled() => {
                    rx.close();
                    while rx.recv_many(&mut buf, BATCH).await > 0 {
                        self.handle(std::mem::take(&mut buf)).await;
                    }
                    break;
                }
            }
        }
        if self.shared.spooling.load(Ordering::Relaxed) {
            self.replay().await;
        }
        let left = self.shared.spooled.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                records = left,
                "results left in the spool; replayed at the next start"
            );
        }
    }

    /// Writes one batch: straight to the database, or to the end of the spool while it holds
    /// records (so they stay in order) or the database fails.
    async fn handle(&self, batch: Vec<Record>) {
        self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let batch = coalesce(batch);
        if !self.shared.spooling.load(Ordering::Relaxed) {
            let mut tries = 0;
            loop {
                match self.backend.write(batch.clone()).await {
                    Ok(()) => {
                        *lock(&self.shared.last_error) = None;
                        return;
                    }
                    Err(e) => {
                        *lock(&self.shared.last_error) = Some(e.to_string());
                        if self.backend.spool().is_some() {
                            tracing::warn!(error = %e, "MongoDB write failed; spooling results until it answers");
                            break;
                        }
                        // The embedded store has no spool: it is the local disk already.
                        tries += 1;
                        tracing::error!(error = %e, tries, "cannot write results; retrying");
                        tokio::time::sleep(TICK).await;
                    }
                }
            }
        }
        self.to_spool(batch).await;
    }

    async fn to_spool(&self, batch: Vec<Record>) {
        let Some(spool) = self.backend.spool() else {
            return;
        };
        let n = batch.len() as u64;
        loop {
            let b = batch.clone();
            match blocking(spool, move |db| db.spool(&b)).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot append to the result spool; retrying");
                    tokio::time::sleep(TICK).await;
                }
            }
        }
        self.shared.spooled.fetch_add(n, Ordering::Relaxed);
        self.shared.spooling.store(true, Ordering::Relaxed);
    }

    /// Replays the spool oldest first; stops at the first failure (the rest waits).
    async fn replay(&self) {
        let Some(spool) = self.backend.spool() else {
            return;
        };
        let mut replayed = 0u64;
        loop {
            let chunk = match blocking(spool, |db| db.spooled(BATCH)).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the result spool");
                    return;
                }
            };
            let Some(&(last, _)) = chunk.last() else {
                self.shared.spooled.store(0, Ordering::Relaxed);
                self.shared.spooling.store(false, Ordering::Relaxed);
                *lock(&self.shared.last_error) = None;
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
            if let Err(e) = self.backend.write(records).await {
                *lock(&self.shared.last_error) = Some(e.to_string());
                tracing::debug!(error = %e, "MongoDB still unreachable");
                return;
            }
            // Written before removed: a crash in between replays them again, and the upsert by
            // session id makes that harmless.
            if let Err(e) = blocking(spool, move |db| db.unspool(last)).await {
                tracing::error!(error = %e, "cannot trim the result spool");
                return;
            }
            replayed += n;
            let _ = self
                .shared
                .spooled
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    Some(s.saturating_sub(n))
                });
        }
    }
}

/// Heartbeat, kill requests, lost runs and retention, every [`TICK`]; errors are logged at
/// debug level (a database that is down is already reported by the writer).
async fn maintain(backend: Backend, settings: StoreSettings, owner: Owner, kill: KillHook) {
    let lost_error = |s: &StoreSettings| {
        format!(
            "lost: the service that ran it stopped heartbeating for {}",
            humantime::format_duration(s.replica_timeout)
        )
    };
    let mut tick = tokio::time::interval(TICK);
    let mut n: u32 = 0;
    // A heartbeat rewrites every running record of this process, so it comes four times per
    // --replica-timeout rather than every tick: with 1,000 runs sleeping, a heartbeat every tick
    // cost the service about 5 % of a core (bench/run.py's sleepers).
    let heartbeat_every = (settings.replica_timeout.as_millis() / (4 * TICK.as_millis())).max(1);
    let heartbeat_every = u32::try_from(heartbeat_every).unwrap_or(u32::MAX);
    loop {
        tick.tick().await;
        let now = now_ms();
        if n % heartbeat_every == 0 {
            if let Err(e) = backend.heartbeat(&owner.instance, now).await {
                tracing::debug!(error = %e, "heartbeat");
            }
        }
        match backend.kill_requests(&owner.instance).await {
            Ok(ids) => {
                for id in ids.iter().filter_map(|id| Uuid::parse_str(id).ok()) {
                    tracing::info!(session_id = %id, "kill requested by another replica");
                    kill(id);
                }
            }
            Err(e) => tracing::debug!(error = %e, "kill requests"),
        }
        if n % 4 == 0 {
            let stale = now - settings.replica_timeout.as_millis() as i64;
            match backend.mark_lost(stale, lost_error(&settings)).await {
                Ok(0) => {}
                Ok(k) => tracing::warn!(
                    records = k,
                    "runs of a replica that stopped are marked lost"
                ),
                Err(e) => tracing::debug!(error = %e, "marking lost runs"),
            }
        }
        if n % SWEEP_EVERY == 0 {
            let before = now - settings.retention.as_millis() as i64;
            match backend.purge(before).await {
                Ok(0) => {}
                Ok(k) => tracing::info!(records = k, "results past --result-retention deleted"),
                Err(e) => tracing::debug!(error = %e, "retention sweep"),
            }
        }
        n = n.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, done: bool) -> Record {
        let mut r = Record::started(
            super::super::Start {
                session: Uuid::nil(),
                task: "t",
                cluster_type: "c",
                path: "c/t",
                is_async: false,
                args: serde_json::Value::Null,
                command: String::new(),
            },
            &Owner::current(),
        );
        r.session_id = id.into();
        r.done = done;
        r
    }

    #[test]
    fn coalesce_keeps_the_end_of_each_session() {
        let out = coalesce(vec![
            rec("a", false),
            rec("b", false),
            rec("a", true),
            rec("a", false),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].session_id.as_str(), out[0].done), ("a", true));
        assert_eq!((out[1].session_id.as_str(), out[1].done), ("b", false));
    }
}
