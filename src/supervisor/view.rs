//! How a run reads as an async session: live from the registry, ended from its result.

use chrono::{DateTime, Local};

use super::events::RunInfo;
use super::registry::Live;
use crate::logs::lock;
use crate::runner::RunResult;
use crate::sessions::SessionInfo;

/// A live run as a session: running, with its latest output line as `message`.
pub fn live(run: &Live) -> SessionInfo {
    SessionInfo {
        message: lock(&run.latest).clone(),
        ..base(&run.info)
    }
}

/// An ended run as a session: `message` is the result's `data`, `error` is `""` on success and
/// the failure text otherwise.
pub fn ended(info: &RunInfo, result: &RunResult, end_at: DateTime<Local>) -> SessionInfo {
    SessionInfo {
        message: result.data.clone(),
        error: result.error().to_string(),
        done: true,
        end_at: Some(end_at),
        exit_code: result.exit_code,
        ..base(info)
    }
}

fn base(info: &RunInfo) -> SessionInfo {
    SessionInfo {
        id: info.id,
        message: String::new(),
        error: String::new(),
        done: false,
        start_at: info.start_at,
        end_at: None,
        exit_code: None,
        task: info.task.path.clone(),
        args: info.args.clone(),
    }
}
