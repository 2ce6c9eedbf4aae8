//! The SQLite file (rusqlite with its bundled library) under the working directory: its tables
//! and queries. Without `--db-address` it holds the records ([`super::embedded`]); with one it
//! is the spool ([`super::spool`]), where records wait, in order, while MongoDB is unreachable.
//!
//! Every call is blocking and short; callers run it on tokio's blocking pool ([`blocking`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::backend::History;
use super::record::{Record, LOST};
use super::StoreError;
use crate::logs::lock;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS results (
    session_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    done INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    instance TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    kill_requested INTEGER NOT NULL DEFAULT 0,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_path_start ON results(path, start_ms);
CREATE INDEX IF NOT EXISTS results_start ON results(start_ms);
CREATE INDEX IF NOT EXISTS results_running ON results(done, heartbeat_ms);
CREATE INDEX IF NOT EXISTS results_status_start ON results(status, start_ms);
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
";

/// An open SQLite file.
pub struct Sqlite {
    conn: Mutex<Connection>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e.to_string())
}

fn json(r: &Record) -> Result<String, StoreError> {
    serde_json::to_string(r).map_err(|e| StoreError::Sqlite(e.to_string()))
}

fn parse(doc: &str) -> Result<Record, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Sqlite(format!("a stored record: {e}")))
}

/// Runs a blocking SQLite call on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    db: &Arc<Sqlite>,
    f: impl FnOnce(&Sqlite) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| StoreError::Sqlite(e.to_string()))?
}

impl Sqlite {
    /// Opens (or creates) the file and its tables, on tokio's blocking pool.
    pub async fn open_shared(path: &Path) -> Result<Arc<Self>, StoreError> {
        let path = path.to_path_buf();
        let db = tokio::task::spawn_blocking(move || Self::open(&path))
            .await
            .map_err(|e| StoreError::Sqlite(e.to_string()))??;
        Ok(Arc::new(db))
    }

    /// Opens (or creates) the file and its tables.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = open().map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Upserts every record in one transaction. An ended record always wins; a running one
    /// never replaces an ended one, so a replay in any order cannot undo an end.
    pub fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO results (session_id, path, status, done, start_ms, instance,
                         heartbeat_ms, kill_requested, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT(session_id) DO UPDATE SET path = excluded.path,
                         status = excluded.status, done = excluded.done,
                         start_ms = excluded.start_ms, instance = excluded.instance,
                         heartbeat_ms = excluded.heartbeat_ms,
                         kill_requested = excluded.kill_requested, doc = excluded.doc
                     WHERE excluded.done = 1 OR results.done = 0",
                )
                .map_err(db)?;
            for r in batch {
                stmt.execute(params![
                    r.session_id,
                    r.path,
                    r.status,
                    r.done,
                    r.start_ms,
                    r.instance,
                    r.heartbeat_ms,
                    r.kill_requested,
                    json(r)?
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// One record.
    pub fn get(&self, session_id: &str) -> Result<Option<Record>, StoreError> {
        self.one("SELECT doc FROM results WHERE session_id = ?1", session_id)
    }

    /// The record in the `doc` column of the row `sql` selects for `session_id`, if any.
    fn one(&self, sql: &str, session_id: &str) -> Result<Option<Record>, StoreError> {
        let conn = lock(&self.conn);
        let doc: Option<String> = conn
            .query_row(sql, [session_id], |row| row.get(0))
            .optional()
            .map_err(db)?;
        doc.as_deref().map(parse).transpose()
    }

    /// Records newest first, filtered as `h` says.
    pub fn history(&self, h: &History) -> Result<Vec<Record>, StoreError> {
        let conn = lock(&self.conn);
        let (before_ms, before_id) = match &h.before {
            Some((ms, id)) => (Some(*ms), Some(id.as_str())),
            None => (None, None),
        };
        // A filter is written as a plain `=` when it is set, so SQLite walks the index that
        // starts with it (`?1 IS NULL OR path = ?1` would make it scan every record).
        let task = if h.task.is_some() {
            "path = ?1"
        } else {
            "?1 IS NULL"
        };
        let status = if h.status.is_some() {
            "status = ?2"
        } else {
            "?2 IS NULL"
        };
        let sql = format!(
            "SELECT doc FROM results WHERE {task} AND {status}
               AND (?3 IS NULL OR start_ms < ?3 OR (start_ms = ?3 AND session_id < ?4))
             ORDER BY start_ms DESC, session_id DESC LIMIT ?5"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
        let rows = stmt
            .query_map(
                params![h.task, h.status, before_ms, before_id, h.limit],
                |row| row.get::<_, String>(0),
            )
            .map_err(db)?;
        let mut out = Vec::new();
        for doc in rows {
            out.push(parse(&doc.map_err(db)?)?);
        }
        Ok(out)
    }

    /// Asks the owner of a running record to kill it; whether a running record was found.
    pub fn request_kill(&self, session_id: &str) -> Result<bool, StoreError> {
        let n = lock(&self.conn)
            .execute(
                "UPDATE results SET kill_requested = 1,
                     doc = json_set(doc, '$.kill_requested', json('true'))
                 WHERE session_id = ?1 AND done = 0",
                [session_id],
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    /// Running sessions of `instance` another replica asked to kill.
    pub fn kill_requests(&self, instance: &str) -> Result<Vec<String>, StoreError> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare_cached(
                "SELECT session_id FROM results
                 WHERE instance = ?1 AND done = 0 AND kill_requested = 1",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([instance], |row| row.get::<_, String>(0))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// Says `instance` is alive in each of its running records.
    pub fn heartbeat(&self, instance: &str, now: i64) -> Result<(), StoreError> {
        lock(&self.conn)
            .execute(
                "UPDATE results SET heartbeat_ms = ?2, doc = json_set(doc, '$.heartbeat_ms', ?2)
                 WHERE instance = ?1 AND done = 0",
                params![instance, now],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Marks running records whose heartbeat is older than `stale_before` as lost.
    pub fn mark_lost(&self, stale_before: i64, now: i64, error: &str) -> Result<u64, StoreError> {
        let n = lock(&self.conn)
            .execute(
                "UPDATE results SET status = ?3, done = 1,
                     doc = json_set(doc, '$.status', ?3, '$.done', json('true'), '$.error', ?4,
                                    '$.end_ms', ?2, '$.duration_ms', ?2 - start_ms)
                 WHERE done = 0 AND heartbeat_ms < ?1",
                params![stale_before, now, LOST, error],
            )
            .map_err(db)?;
        Ok(n as u64)
    }

    /// Deletes ended records that started before `before`.
    pub fn purge(&self, before: i64) -> Result<u64, StoreError> {
        let n = lock(&self.conn)
            .execute(
                "DELETE FROM results WHERE done = 1 AND start_ms < ?1",
                [before],
            )
            .map_err(db)?;
        Ok(n as u64)
    }

    /// Appends records to the spool, in order.
    pub fn spool(&self, batch: &[Record]) -> Result<(), StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO spool (session_id, doc) VALUES (?1, ?2)")
                .map_err(db)?;
            for r in batch {
                stmt.execute(params![r.session_id, json(r)?]).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// The oldest `n` spooled records with their sequence numbers.
    pub fn spooled(&self, n: usize) -> Result<Vec<(i64, Record)>, StoreError> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare_cached("SELECT seq, doc FROM spool ORDER BY seq LIMIT ?1")
            .map_err(db)?;
        let rows = stmt
            .query_map([n as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, doc) = row.map_err(db)?;
            out.push((seq, parse(&doc)?));
        }
        Ok(out)
    }

    /// Removes spooled records up to and including `seq` (they are in the database).
    pub fn unspool(&self, seq: i64) -> Result<(), StoreError> {
        lock(&self.conn)
            .execute("DELETE FROM spool WHERE seq <= ?1", [seq])
            .map_err(db)?;
        Ok(())
    }

    /// How many records wait in the spool.
    pub fn spool_len(&self) -> Result<u64, StoreError> {
        lock(&self.conn)
            .query_row("SELECT count(*) FROM spool", [], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(db)
    }

    /// The newest spooled record of a session.
    pub fn spooled_get(&self, session_id: &str) -> Result<Option<Record>, StoreError> {
        self.one(
            "SELECT doc FROM spool WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1",
            session_id,
        )
    }
}
