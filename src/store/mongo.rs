//! The MongoDB backend (`--db-address`), through the official `mongodb` crate, behind the
//! spool ([`super::spool`]): the `results` collection of the configured database, `_id` = session id, a unique index on `session_id` and one on
//! `path` + `start_ms`. Only operations FerretDB also serves are used (no TTL indexes,
//! transactions, change streams or `Client::bulk_write`); retention is the service's own sweep.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{self, doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};

use super::backend::{Backend, History, Profile};
use super::record::{Record, LOST};
use super::spool::Spooled;
use super::state::StoreState;
use super::{Secret, StoreError, StoreSettings};

/// How long an operation waits for a reachable server before it fails (and records spool).
const SELECT_TIMEOUT: Duration = Duration::from_secs(2);

/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;

/// The `results` collection.
#[derive(Clone)]
pub struct Mongo {
    results: Collection<Document>,
    secret: Secret,
}

/// The URI with the password for scripts, and without it for `/-/store`.
pub fn profile(settings: &StoreSettings) -> Profile {
    Profile {
        name: "mongodb",
        location: settings.redacted_uri(),
        child_uri: settings.uri(),
        keeps_records: true,
        state: StoreState::Connected,
    }
}

/// A client behind the spool. A MongoDB that is down does not stop the start: records spool
/// until it answers.
pub async fn open(s: &StoreSettings) -> Result<Arc<dyn Backend>, StoreError> {
    let mongo = Mongo::new(&s.uri(), &s.db_name, s.password.clone()).await?;
    match mongo.ensure_indexes().await {
        Ok(()) => tracing::info!(uri = %s.redacted_uri(), "result store: MongoDB"),
        Err(e) => tracing::warn!(uri = %s.redacted_uri(), error = %e,
            "MongoDB is unreachable at startup; results spool to {} until it answers",
            s.file.display()),
    }
    Ok(Arc::new(Spooled::open(mongo, &s.file).await?))
}

impl Mongo {
    /// A client for `uri` (no connection is made yet: the driver connects on first use, so a
    /// database that is down at startup only makes the first writes spool).
    pub async fn new(uri: &str, db_name: &str, secret: Secret) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Mongo(secret.redact(&e.to_string())))?;
        options.server_selection_timeout = Some(SELECT_TIMEOUT);
        options.connect_timeout = Some(SELECT_TIMEOUT);
        options.app_name = Some("celery-service".into());
        let client = Client::with_options(options)
            .map_err(|e| StoreError::Mongo(secret.redact(&e.to_string())))?;
        Ok(Self {
            results: client.database(db_name).collection("results"),
            secret,
        })
    }

    fn err(&self, e: mongodb::error::Error) -> StoreError {
        StoreError::Mongo(self.secret.redact(&e.to_string()))
    }

    /// Creates the indexes (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = IndexModel::builder()
            .keys(doc! {"session_id": 1})
            .options(IndexOptions::builder().unique(true).build())
            .build();
        let by_task = IndexModel::builder()
            .keys(doc! {"path": 1, "start_ms": -1})
            .build();
        let running = IndexModel::builder()
            .keys(doc! {"done": 1, "heartbeat_ms": 1})
            .build();
        self.results
            .create_indexes([unique, by_task, running])
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[async_trait]
impl Backend for Mongo {
    /// Upserts every record by session id, concurrently. An ended record always replaces; a
    /// running one only replaces a running one (otherwise its upsert meets the unique `_id`
    /// and is dropped), so a replay in any order cannot undo an end or write twice.
    async fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        let mut set = tokio::task::JoinSet::new();
        for r in batch {
            let mut document = bson::to_document(r)
                .map_err(|e| StoreError::Mongo(format!("cannot encode a record: {e}")))?;
            document.insert("_id", r.session_id.clone());
            let filter = if r.done {
                doc! {"_id": &r.session_id}
            } else {
                doc! {"_id": &r.session_id, "done": false}
            };
            let results = self.results.clone();
            set.spawn(async move {
                match results.replace_one(filter, document).upsert(true).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_duplicate(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            });
        }
        let mut first_error = None;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(self.err(e));
                }
                Err(e) => {
                    first_error.get_or_insert(StoreError::Mongo(e.to_string()));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One record.
    async fn get(&self, session_id: &str) -> Result<Option<Record>, StoreError> {
        let found = self
            .results
            .find_one(doc! {"_id": session_id})
            .await
            .map_err(|e| self.err(e))?;
        found.map(decode).transpose()
    }

    /// Records newest first, filtered as `h` says.
    async fn history(&self, h: &History) -> Result<Vec<Record>, StoreError> {
        let mut filter = Document::new();
        if let Some(task) = &h.task {
            filter.insert("path", task);
        }
        if let Some(status) = &h.status {
            filter.insert("status", status);
        }
        if let Some((ms, id)) = &h.before {
            filter.insert(
                "$or",
                vec![
                    doc! {"start_ms": {"$lt": ms}},
                    doc! {"start_ms": ms, "session_id": {"$lt": id}},
                ],
            );
        }
        let mut cursor = self
            .results
            .find(filter)
            .sort(doc! {"start_ms": -1, "session_id": -1})
            .limit(h.limit)
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(|e| self.err(e))? {
            let document = cursor.deserialize_current().map_err(|e| self.err(e))?;
            out.push(decode(document)?);
        }
        Ok(out)
    }

    /// Asks the owner of a running record to kill it; whether a running record was found.
    async fn request_kill(&self, session_id: &str) -> Result<bool, StoreError> {
        let r = self
            .results
            .update_one(
                doc! {"_id": session_id, "done": false},
                doc! {"$set": {"kill_requested": true}},
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.matched_count > 0)
    }

    /// Running sessions of `instance` another replica asked to kill.
    async fn kill_requests(&self, instance: &str) -> Result<Vec<String>, StoreError> {
        let mut cursor = self
            .results
            .find(doc! {"instance": instance, "done": false, "kill_requested": true})
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(|e| self.err(e))? {
            let document = cursor.deserialize_current().map_err(|e| self.err(e))?;
            match document.get_str("session_id") {
                Ok(id) => out.push(id.to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, "a kill request without a session id is ignored")
                }
            }
        }
        Ok(out)
    }

    /// Says `instance` is alive in each of its running records.
    async fn heartbeat(&self, instance: &str, now: i64) -> Result<(), StoreError> {
        self.results
            .update_many(
                doc! {"instance": instance, "done": false},
                doc! {"$set": {"heartbeat_ms": now}},
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Marks running records whose heartbeat is older than `stale_before` as lost.
    async fn mark_lost(&self, stale_before: i64, now: i64, error: &str) -> Result<u64, StoreError> {
        let r = self
            .results
            .update_many(
                doc! {"done": false, "heartbeat_ms": {"$lt": stale_before}},
                doc! {"$set": {"status": LOST, "done": true, "error": error, "end_ms": now}},
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.modified_count)
    }

    /// Deletes ended records that started before `before`.
    async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        let r = self
            .results
            .delete_many(doc! {"done": true, "start_ms": {"$lt": before}})
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.deleted_count)
    }
}

fn decode(document: Document) -> Result<Record, StoreError> {
    bson::from_document(document)
        .map_err(|e| StoreError::Mongo(format!("cannot decode a stored record: {e}")))
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}
