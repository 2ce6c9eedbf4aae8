//! The stored result record: one per run, written when the run starts and replaced when it
//! ends, keyed by session id. The same serde shape is the SQLite document, the spool row and
//! the MongoDB document; `GET /results` answers with its own type (`api::results`). Also how a
//! stored record reads as a session.

use chrono::{DateTime, Local, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::runner::RunResult;
use crate::sessions::SessionInfo;

/// `status` of a record whose run has not ended.
pub const RUNNING: &str = "running";
/// `status` of a record whose replica stopped heartbeating while the run went on.
pub const LOST: &str = "lost";

/// One run as the result store keeps it (database document and spool row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
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
    pub end_ms: Option<i64>,
    /// How long it ran, in milliseconds; null while it runs.
    pub duration_ms: Option<i64>,
    /// Exit code of an external task that exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended an external task, if one did.
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

/// Who this service is, written into every record.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Host name.
    pub host: String,
    /// This process's id: host, pid and a random suffix.
    pub instance: String,
}

impl Owner {
    /// This process.
    pub fn current() -> Self {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let suffix = Uuid::new_v4().simple().to_string();
        let instance = format!("{host}/{}/{}", std::process::id(), &suffix[..8]);
        Self { host, instance }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// What a run is when it starts, as the record needs it.
pub struct Start<'a> {
    /// Session id.
    pub session: Uuid,
    /// Task name.
    pub task: &'a str,
    /// Cluster type.
    pub cluster_type: &'a str,
    /// URL path of the task.
    pub path: &'a str,
    /// Whether it is an async session.
    pub is_async: bool,
    /// The POSTed arguments.
    pub args: Value,
    /// The command as executed.
    pub command: String,
}

impl Record {
    /// The record of a run that has just started.
    pub fn started(start: Start<'_>, owner: &Owner) -> Self {
        let now = now_ms();
        Self {
            session_id: start.session.to_string(),
            task: start.task.to_string(),
            cluster_type: start.cluster_type.to_string(),
            path: start.path.to_string(),
            mode: if start.is_async { "async" } else { "sync" }.to_string(),
            args: start.args,
            command: start.command,
            host: owner.host.clone(),
            instance: owner.instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            status: RUNNING.to_string(),
            done: false,
            start_ms: now,
            end_ms: None,
            duration_ms: None,
            exit_code: None,
            signal: None,
            stdout_last: String::new(),
            stderr_last: String::new(),
            error: String::new(),
            heartbeat_ms: now,
            kill_requested: false,
        }
    }

    /// The same record once the run has ended with `result`.
    pub fn ended(&self, result: &RunResult) -> Self {
        let now = now_ms();
        Self {
            status: result.outcome().to_string(),
            done: true,
            end_ms: Some(now),
            duration_ms: Some(now - self.start_ms),
            exit_code: result.exit_code,
            signal: result.signal,
            stdout_last: result.data.clone(),
            stderr_last: result.stderr_last.clone(),
            error: result.error().to_string(),
            heartbeat_ms: now,
            ..self.clone()
        }
    }

    /// The record as `/async/query` shows a session, the same shape as a live one.
    pub fn to_session(&self) -> SessionInfo {
        SessionInfo {
            id: Uuid::parse_str(&self.session_id).unwrap_or_default(),
            message: self.stdout_last.clone(),
            error: self.error.clone(),
            done: self.done,
            start_at: local(self.start_ms),
            end_at: self.end_ms.map(local),
            exit_code: self.exit_code,
            task: self.path.clone(),
            args: self.args.clone(),
        }
    }
}

fn local(ms: i64) -> DateTime<Local> {
    Local
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Local::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_record_keeps_the_start_and_reads_as_a_session() {
        let owner = Owner::current();
        let id = Uuid::new_v4();
        let start = Record::started(
            Start {
                session: id,
                task: "demo1",
                cluster_type: "TendbCluster",
                path: "tendb-cluster/demo1",
                is_async: true,
                args: serde_json::json!(["1"]),
                command: "/bin/echo 1".into(),
            },
            &owner,
        );
        assert_eq!((start.status.as_str(), start.done), (RUNNING, false));
        let mut result = RunResult::failure("out".into(), "exited with code 3".into());
        result.exit_code = Some(3);
        result.stderr_last = "err".into();
        let end = start.ended(&result);
        assert_eq!(end.status, "failed");
        assert_eq!(end.error, "exited with code 3");
        assert_eq!(end.stderr_last, "err");
        assert_eq!(end.start_ms, start.start_ms);
        let s = end.to_session();
        assert_eq!((s.id, s.done, s.message.as_str()), (id, true, "out"));
        assert_eq!(s.exit_code, Some(3));
        assert_eq!(s.task, "tendb-cluster/demo1");
    }
}
