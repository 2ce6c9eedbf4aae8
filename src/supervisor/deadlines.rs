//! Every deadline of a run in one place: its time limit, the grace between SIGTERM and SIGKILL,
//! the slack on top of it for a run to be reaped and recorded, and how long shutdown lets runs
//! finish.

use std::future::Future;
use std::time::Duration;

use crate::runner::{Stop, StopReason};
use crate::table::{Task, TaskKind};

/// How long, on top of the kill grace, a stopped run may take to be reaped, read to the end and
/// recorded. Whoever waits for a stopped run (a kill answer, a replacing run, shutdown) waits
/// the grace plus this, then goes on without it.
const SLACK: Duration = Duration::from_secs(5);

/// The deadlines of ending runs, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// `--kill-grace`: time between SIGTERM and SIGKILL (a built-in task: between its stop and
    /// the service giving up on it).
    pub grace: Duration,
    /// `--shutdown-timeout`: how long shutdown lets active runs finish before stopping them.
    pub shutdown: Duration,
    /// `--default-timeout`: the time limit of a task that has none of its own.
    pub default_timeout: Option<Duration>,
}

impl Deadlines {
    /// How long to wait for a run asked to stop to be over: the grace plus the slack.
    pub fn stopped_within(&self) -> Duration {
        self.grace + SLACK
    }

    /// The time limit of a run of `task`: its own `timeout`, else `--default-timeout`.
    pub fn limit(&self, task: &Task) -> Option<Duration> {
        match &task.kind {
            TaskKind::External { task, .. } => task.timeout.or(self.default_timeout),
            TaskKind::Builtin(_) => self.default_timeout,
        }
    }
}

/// Runs `run` with `stop` asked to stop for [`StopReason::TimedOut`] once `limit` has passed;
/// the run then ends as a kill ends it.
pub async fn limited<T>(run: impl Future<Output = T>, stop: &Stop, limit: Option<Duration>) -> T {
    let Some(limit) = limit else {
        return run.await;
    };
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r,
        () = tokio::time::sleep(limit) => {
            stop.stop(StopReason::TimedOut(limit));
            run.await
        }
    }
}
