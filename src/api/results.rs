//! `GET /results`: the result store's history of runs, newest first, a page at a time.

use std::sync::Arc;

use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use crate::app::App;
use crate::http::{Access, Envelope, ErrorEnvelope, Route};
use crate::store::{History, Record, StoreError};

/// The routes of this file, with the access each needs: the history starts and stops nothing.
pub const ROUTES: &[Route] = &[Route::new("GET", "/results", Access::Read).listed(7)];

/// Records per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 50;
/// Most records per page.
const MAX_LIMIT: u32 = 1000;

// The answer's own type, not the stored `Record`: how the store keeps a record can change
// without changing the API. Its schema keeps the name and the description it always had.
/// One run as the result store keeps it.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "Record")]
pub struct ResultRecord {
    /// Session id (UUID v4); unique.
    pub session_id: String,
    /// Task name as configured.
    pub task: String,
    /// Cluster type as configured.
    pub cluster_type: String,
    /// The task's path, e.g. `tendb-cluster/demo1` (what `GET /results?task=` filters on).
    pub path: String,
    /// `sync` or `async`.
    pub mode: String,
    /// The POSTed arguments (array for external tasks, object for built-in ones).
    pub args: Value,
    /// The command as executed (program and quoted arguments), or `builtin <path>`.
    pub command: String,
    /// Host name of the service that ran it.
    pub host: String,
    /// Per-process id of the service that ran it (two replicas may share a host).
    pub instance: String,
    /// Version of the service that ran it.
    pub version: String,
    /// `running`, `ok`, `failed`, `killed`, `cancelled`, `timed_out`, `shutdown`, `replaced`
    /// or `lost`.
    pub status: String,
    /// Whether the run has ended (every status but `running`).
    pub done: bool,
    /// Start time, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// End time, milliseconds since the Unix epoch; null while it runs.
    #[oai(nullable)]
    pub end_ms: Option<i64>,
    /// How long it ran, in milliseconds; null while it runs.
    #[oai(nullable)]
    pub duration_ms: Option<i64>,
    /// Exit code of an external task that exited by itself.
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    /// The signal that ended an external task, if one did.
    #[oai(nullable)]
    pub signal: Option<i32>,
    /// Last non-empty stdout line (a built-in task's result).
    pub stdout_last: String,
    /// Last non-empty stderr line.
    pub stderr_last: String,
    /// `""` on success, the failure text otherwise.
    pub error: String,
    /// When the owner last said it is alive, milliseconds since the Unix epoch.
    pub heartbeat_ms: i64,
    /// Set by a replica asked to kill a session another replica owns.
    pub kill_requested: bool,
}

impl From<Record> for ResultRecord {
    fn from(r: Record) -> Self {
        Self {
            session_id: r.session_id,
            task: r.task,
            cluster_type: r.cluster_type,
            path: r.path,
            mode: r.mode,
            args: r.args,
            command: r.command,
            host: r.host,
            instance: r.instance,
            version: r.version,
            status: r.status,
            done: r.done,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            duration_ms: r.duration_ms,
            exit_code: r.exit_code,
            signal: r.signal,
            stdout_last: r.stdout_last,
            stderr_last: r.stderr_last,
            error: r.error,
            heartbeat_ms: r.heartbeat_ms,
            kill_requested: r.kill_requested,
        }
    }
}

/// One page of `GET /results`, newest first.
#[derive(Debug, Clone, Object)]
pub struct ResultsPage {
    /// The records.
    pub records: Vec<ResultRecord>,
    /// Pass as `before` for the next (older) page; null on the last page.
    #[oai(nullable)]
    pub next: Option<String>,
}

/// Answers of `GET /results`.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "ResultsAnswer::bad_query")]
pub enum ResultsAnswer {
    /// A page of records, newest first.
    #[oai(status = 200)]
    Ok(Json<Envelope<ResultsPage>>),
    /// `limit` or `before` is not valid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorEnvelope>),
    /// The result store cannot be read now (MongoDB unreachable).
    #[oai(status = 503)]
    Unavailable(Json<ErrorEnvelope>),
}

impl ResultsAnswer {
    fn bad_query(err: poem::Error) -> Self {
        Self::BadRequest(Json(ErrorEnvelope::new(err.to_string())))
    }

    /// The answer for a store that cannot be read.
    pub fn unavailable(e: &StoreError) -> Self {
        Self::Unavailable(Json(ErrorEnvelope::new(e.to_string())))
    }
}

/// The filter of a `GET /results` query, or what is wrong with it.
pub fn history(
    task: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
) -> Result<History, String> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!("limit must be 1 to {MAX_LIMIT}, not {limit}"));
    }
    let before = match before.filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(parse_cursor(&b).ok_or_else(|| {
            format!("before `{b}` is not a cursor (use `next` of the previous page)")
        })?),
    };
    Ok(History {
        task: task.filter(|t| !t.is_empty()),
        status: status.filter(|s| !s.is_empty()),
        limit: i64::from(limit),
        before,
    })
}

/// A page of `records`, with the cursor of the next one when the page is full.
pub fn page(records: Vec<Record>, limit: i64) -> ResultsPage {
    let next = (records.len() as i64 >= limit)
        .then(|| {
            records
                .last()
                .map(|r| format!("{}_{}", r.start_ms, r.session_id))
        })
        .flatten();
    ResultsPage {
        records: records.into_iter().map(ResultRecord::from).collect(),
        next,
    }
}

/// The result history API.
pub struct ResultsApi {
    /// The service.
    pub app: Arc<App>,
}

#[OpenApi]
impl ResultsApi {
    /// Result history from the result store, newest first.
    ///
    /// Filters: `task` (a task path such as `tendb-cluster/demo1`), `status` (`ok`, `failed`,
    /// `killed`, `cancelled`, `timed_out`, `shutdown`, `lost`, `running`, …); `limit` (1-1000,
    /// default 50); `before`: the `next` cursor of the previous page.
    #[oai(path = "/results", method = "get")]
    async fn results(
        &self,
        task: Query<Option<String>>,
        status: Query<Option<String>>,
        limit: Query<Option<u32>>,
        before: Query<Option<String>>,
    ) -> ResultsAnswer {
        let h = match history(task.0, status.0, limit.0, before.0) {
            Ok(h) => h,
            Err(e) => return ResultsAnswer::BadRequest(Json(ErrorEnvelope::new(e))),
        };
        let limit = h.limit;
        match self.app.store.history(h).await {
            Ok(records) => ResultsAnswer::Ok(Json(Envelope::ok(page(records, limit)))),
            Err(e) => ResultsAnswer::unavailable(&e),
        }
    }
}

fn parse_cursor(raw: &str) -> Option<(i64, String)> {
    let (ms, id) = raw.split_once('_')?;
    let id = uuid::Uuid::parse_str(id).ok()?;
    Some((ms.parse().ok()?, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked_and_cursors_round_trip() {
        assert!(history(None, None, Some(0), None).is_err());
        assert!(history(None, None, Some(1001), None).is_err());
        assert!(history(None, None, None, Some("x".into())).is_err());
        let id = uuid::Uuid::new_v4();
        let h = history(
            Some("a/b".into()),
            Some(String::new()),
            None,
            Some(format!("12_{id}")),
        )
        .unwrap();
        assert_eq!(h.limit, 50);
        assert_eq!(h.task.as_deref(), Some("a/b"));
        assert_eq!(h.status, None);
        assert_eq!(h.before, Some((12, id.to_string())));
    }
}
