//! `--no-result-store`: the backend that keeps nothing. Every "off" answer of the store comes
//! from here: no record is written, a session is only known while it is in memory, `/results`
//! says the store is off, and scripts get an empty `CS_RESULT_DB_URI`.

use std::sync::Arc;

use async_trait::async_trait;

use super::backend::{Backend, Condition, History, Profile};
use super::record::Record;
use super::state::StoreState;
use super::{StoreError, StoreSettings};

/// No backend at all.
pub struct Off;

/// Off keeps no records: no queue, no writer, no location, no URI for scripts.
pub fn profile(_: &StoreSettings) -> Profile {
    Profile {
        name: "off",
        location: String::new(),
        child_uri: String::new(),
        keeps_records: false,
        state: StoreState::Off,
    }
}

/// Says, once, that results are kept in memory only.
pub async fn open(_: &StoreSettings) -> Result<Arc<dyn Backend>, StoreError> {
    tracing::warn!("result store: off (--no-result-store); results are kept in memory only, until --session-retention");
    Ok(Arc::new(Off))
}

#[async_trait]
impl Backend for Off {
    fn condition(&self) -> Condition {
        Condition {
            state: StoreState::Off,
            ..Condition::connected()
        }
    }

    /// Never called (the store has no writer when off); the records are not kept.
    async fn write(&self, _: &[Record]) -> Result<(), StoreError> {
        Ok(())
    }

    /// There is none: a session is only known while it is in memory.
    async fn get(&self, _: &str) -> Result<Option<Record>, StoreError> {
        Ok(None)
    }

    async fn history(&self, _: &History) -> Result<Vec<Record>, StoreError> {
        Err(StoreError::Off)
    }

    async fn request_kill(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn kill_requests(&self, _: &str) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn heartbeat(&self, _: &str, _: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn mark_lost(&self, _: i64, _: i64, _: &str) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn purge(&self, _: i64) -> Result<u64, StoreError> {
        Ok(0)
    }
}
