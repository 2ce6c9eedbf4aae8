//! What a run does between its start and its end. An external program and a built-in Rust task
//! both implement [`Work`]: run to the end, or once asked to stop, end within the grace. Both
//! report an [`Ending`], and the supervisor turns it into the run's result in one place
//! ([`RunResult::finish`]).

use std::ffi::OsString;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::logs::TaskLog;
use crate::runner::tracking::Tracking;
use crate::runner::{self, Ending, Progress, RunEnv, Stop};
use crate::tasks::{Prepared, TaskContext};

/// What every kind of work is given.
pub struct WorkCtx {
    /// The run's session id.
    pub id: Uuid,
    /// Asked when the run must end early (kill, hang-up, timeout, replace, shutdown).
    pub stop: Stop,
    /// Once asked to stop, how long the work may take to end.
    pub grace: Duration,
    /// The task's log.
    pub log: Arc<TaskLog>,
    /// Told each new latest stdout line (a built-in task: each line it logs).
    pub progress: Progress,
}

/// The body of a run.
pub trait Work: Send + 'static {
    /// Runs to the end; once `ctx.stop` is asked, ends within `ctx.grace` (or is given up on).
    fn run(self, ctx: WorkCtx) -> impl Future<Output = Ending> + Send;
}

/// An external program, started in a process group (and cgroup) of its own.
pub struct External {
    /// The program handed to exec.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables set for it on top of the service's environment.
    pub vars: Vec<(&'static str, String)>,
    /// How every process of the run is found.
    pub tracking: Option<Arc<Tracking>>,
    /// Leave what the program started running when it exits by itself (`detach_children`).
    pub detach: bool,
}

impl Work for External {
    async fn run(self, ctx: WorkCtx) -> Ending {
        let vars: Vec<(&'static str, &str)> =
            self.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let env = RunEnv {
            vars: &vars,
            log: &ctx.log,
            session: ctx.id,
            cancel: ctx.stop,
            grace: ctx.grace,
            on_stdout: Some(&*ctx.progress),
            tracking: self.tracking.as_deref(),
            detach: self.detach,
        };
        runner::run(&self.program, &self.args, env).await
    }
}

/// A task written in Rust, ready to run with its checked parameters.
pub struct Builtin {
    /// The prepared run.
    pub prepared: Prepared,
    /// The task's path, for the log of a panic.
    pub path: String,
}

impl Work for Builtin {
    async fn run(self, ctx: WorkCtx) -> Ending {
        let task_ctx = TaskContext::new(
            ctx.id,
            ctx.stop.clone(),
            ctx.log.clone(),
            Some(ctx.progress.clone()),
        );
        let run = catch_panic((self.prepared)(task_ctx), &ctx.log, ctx.id, &self.path);
        tokio::pin!(run);
        // A built-in task is asked to stop through its token; one that ignores it is given up
        // on after the same grace an external task gets before SIGKILL.
        tokio::select! {
            r = &mut run => Ending::returned(r, false),
            () = ctx.stop.cancelled() => match tokio::time::timeout(ctx.grace, &mut run).await {
                Ok(r) => Ending::returned(r, true),
                Err(_) => Ending::abandoned(),
            },
        }
    }
}

/// A built-in task's run that fails with the panic's message instead of unwinding into the
/// service; the panic is logged with its task.
async fn catch_panic(
    run: impl Future<Output = Result<String, String>>,
    log: &TaskLog,
    session: Uuid,
    task: &str,
) -> Result<String, String> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            log.event(session, format_args!("panicked: {what}"));
            tracing::error!(task, %session, "built-in task panicked: {what}");
            Err(format!("the task panicked: {what}"))
        }
    }
}
