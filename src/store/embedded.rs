//! The embedded backend (the default): records in the SQLite file of `--result-db-file`. It is
//! local disk already, so it has no spool: a failed write is retried by the writer.

use std::sync::Arc;

use async_trait::async_trait;

use super::backend::{Backend, History, Profile};
use super::record::Record;
use super::sqlite::{blocking, Sqlite};
use super::state::StoreState;
use super::{StoreError, StoreSettings};

/// Records in one SQLite file.
pub struct Embedded {
    db: Arc<Sqlite>,
}

/// The file, as a `file:` URI for scripts and for `/-/store`.
pub fn profile(settings: &StoreSettings) -> Profile {
    Profile {
        name: "embedded",
        location: settings.redacted_uri(),
        child_uri: settings.uri(),
        keeps_records: true,
        state: StoreState::Connected,
    }
}

/// Opens (or creates) the file.
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn Backend>, StoreError> {
    let db = Sqlite::open_shared(&settings.file).await?;
    Ok(Arc::new(Embedded { db }))
}

#[async_trait]
impl Backend for Embedded {
    async fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        let batch = batch.to_vec();
        blocking(&self.db, move |db| db.write(&batch)).await
    }

    async fn get(&self, session_id: &str) -> Result<Option<Record>, StoreError> {
        let key = session_id.to_string();
        blocking(&self.db, move |db| db.get(&key)).await
    }

    async fn history(&self, h: &History) -> Result<Vec<Record>, StoreError> {
        let h = h.clone();
        blocking(&self.db, move |db| db.history(&h)).await
    }

    async fn request_kill(&self, session_id: &str) -> Result<bool, StoreError> {
        let key = session_id.to_string();
        blocking(&self.db, move |db| db.request_kill(&key)).await
    }

    async fn kill_requests(&self, instance: &str) -> Result<Vec<String>, StoreError> {
        let who = instance.to_string();
        blocking(&self.db, move |db| db.kill_requests(&who)).await
    }

    async fn heartbeat(&self, instance: &str, now: i64) -> Result<(), StoreError> {
        let who = instance.to_string();
        blocking(&self.db, move |db| db.heartbeat(&who, now)).await
    }

    async fn mark_lost(&self, stale_before: i64, now: i64, error: &str) -> Result<u64, StoreError> {
        let error = error.to_string();
        blocking(&self.db, move |db| db.mark_lost(stale_before, now, &error)).await
    }

    async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        blocking(&self.db, move |db| db.purge(before)).await
    }
}
