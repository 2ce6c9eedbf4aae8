//! The state one running service shares between requests, and the operations the HTTP layer
//! calls: run a task synchronously, start a session, query and kill sessions.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::control::{self, Control, Slot};
use crate::logs::{TaskLog, TaskLogs};
use crate::reload::Reloader;
use crate::runner::tracking::Tracking;
pub use crate::runner::RunResult;
use crate::runner::{self, Progress, RunEnv, Stop, StopReason};
use crate::sessions::SessionStore;
use crate::store::{Record, Start, Store};
use crate::table::{load_table, Routes, StartError, Task, TaskKind};
use crate::tasks::{Prepared, TaskContext};

pub use crate::settings::{absolute_dir, Settings};

/// Shared by every request.
pub struct App {
    /// The current route table.
    pub routes: Arc<Routes>,
    /// Async sessions.
    pub sessions: SessionStore,
    /// Per-task log files.
    pub logs: TaskLogs,
    /// The validated settings.
    pub settings: Settings,
    /// The collect folder, made absolute at startup so children's paths do not depend on cwd.
    pub collect_dir: PathBuf,
    /// Every run in flight, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Reloads the config into `routes` and remembers the last rejected reload.
    pub reloader: Arc<Reloader>,
    /// Every run's result record (src/store).
    pub store: Arc<Store>,
    /// Which runs may start, idempotency keys, timeouts, shutdown draining.
    pub control: Arc<Control>,
    /// Readiness checks other parts add (`/readyz`).
    pub readiness: crate::health::Readiness,
}

impl App {
    /// Validates the config and prepares everything the service needs, before anything listens.
    pub fn load(settings: Settings) -> Result<Arc<Self>, StartError> {
        let collect_dir = absolute_dir(&settings.collect_dir)?;
        let table = load_table(&settings.config_path, &collect_dir, 1)?;
        std::fs::create_dir_all(&settings.log_dir).map_err(|source| StartError::Io {
            what: "cannot create the log folder",
            path: settings.log_dir.clone(),
            source,
        })?;
        let tracking = Tracking::setup(settings.process_tracking)?;
        let control = Control::new(settings.limits, Some(tracking));
        let routes = Arc::new(Routes::new(table));
        let reloader = Arc::new(Reloader::new(
            routes.clone(),
            settings.config_path.clone(),
            collect_dir.clone(),
            settings.reload_debounce,
        ));
        let store = Arc::new(Store::new(settings.store.clone()));
        Ok(Arc::new(Self {
            routes,
            store,
            sessions: SessionStore::new(settings.session_retention),
            logs: TaskLogs::new(settings.log_dir.clone(), settings.rotation()),
            collect_dir,
            settings,
            tracker: TaskTracker::new(),
            reloader,
            control,
            readiness: crate::health::Readiness::default(),
        }))
    }
}

/// A request's body, checked against the task's parameters.
pub enum Input {
    /// Arguments for an external task.
    Args(Vec<String>),
    /// A ready built-in run and the parameters it was given.
    Builtin(Prepared, Value),
}

impl Input {
    /// The arguments as a session shows them.
    fn as_json(&self) -> Value {
        match self {
            Self::Args(args) => Value::from(args.clone()),
            Self::Builtin(_, params) => params.clone(),
        }
    }
}

/// A sync run's result once its task is joined; a run that panicked is a failed run.
fn joined_result(joined: Result<RunResult, JoinError>) -> RunResult {
    joined.unwrap_or_else(|e| {
        RunResult::failure(
            String::new(),
            format!("the run failed inside the service: {e}"),
        )
    })
}

impl App {
    /// Runs `task` once to the end (or until `cancel`) and logs its lifecycle.
    ///
    /// `progress`, when given, is told the latest stdout line (of a built-in task: its latest
    /// log line) while the run goes on.
    pub async fn execute(
        &self,
        task: &Task,
        input: Input,
        session: Uuid,
        cancel: Stop,
        progress: Option<Progress>,
    ) -> RunResult {
        let log = self.logs.get(&task.name);
        let started = Instant::now();
        // The argv of an external task, built once for the record, the log and the run.
        let argv = match (&input, &task.kind) {
            (Input::Args(posted), TaskKind::External { invocation, .. }) => {
                Some(invocation.args(posted))
            }
            _ => None,
        };
        let command = match (&argv, &task.kind) {
            (Some(args), TaskKind::External { invocation, .. }) => format!(
                "{} {}",
                invocation.program.to_string_lossy(),
                QuotedArgs(args)
            ),
            _ => format!("builtin /{}", task.path),
        };
        // An async session reports progress; a sync run does not.
        let record = self.record_start(task, &input, session, progress.is_some(), command);
        crate::metrics::run_started(&task.name);
        let result = match input {
            Input::Args(_) => {
                let TaskKind::External { invocation, .. } = &task.kind else {
                    unreachable!("arguments are only parsed for external tasks")
                };
                let args = argv.unwrap_or_default();
                log.event(
                    session,
                    format_args!("start /{}: {}", task.path, record.command),
                );
                let mut session_text = Uuid::encode_buffer();
                runner::run(
                    &invocation.program,
                    &args,
                    RunEnv {
                        vars: &[
                            ("CS_TASK_NAME", task.name.as_str()),
                            ("CS_CLUSTER_TYPE", task.cluster_type.as_str()),
                            (
                                "CS_SESSION_ID",
                                session.hyphenated().encode_lower(&mut session_text),
                            ),
                            ("CS_RESULT_DB_URI", self.store.child_uri()),
                            ("CS_DB_NAME", self.store.db_name()),
                        ],
                        log: &log,
                        session,
                        cancel,
                        grace: self.settings.kill_grace,
                        on_stdout: progress.as_deref(),
                        tracking: self.control.tracking.as_ref(),
                        detach: matches!(&task.kind, TaskKind::External { task, .. } if task.detach_children),
                    },
                )
                .await
            }
            Input::Builtin(prepared, params) => {
                log.event(session, format_args!("start /{} with {params}", task.path));
                let ctx = TaskContext::new(session, cancel.clone(), log.clone(), progress);
                let run = catch_panic(prepared(ctx), &log, session, &task.path);
                tokio::pin!(run);
                // A built-in task is asked to stop through its token; one that ignores it is
                // dropped after the same grace an external task gets before SIGKILL.
                let res = tokio::select! {
                    r = &mut run => r,
                    () = cancel.cancelled() => {
                        let reason = cancel.reason().cloned().unwrap_or(StopReason::Killed);
                        let msg = match tokio::time::timeout(self.settings.kill_grace, &mut run).await {
                            Ok(Err(e)) => format!("{reason}: {e}"),
                            Ok(Ok(_)) | Err(_) => reason.to_string(),
                        };
                        let mut stopped = RunResult::failure(String::new(), msg);
                        stopped.stopped = Some(reason);
                        self.store.put(record.ended(&stopped));
                        let stopped = self.log_end(&log, session, started, stopped);
                        crate::metrics::run_ended(&task.name, stopped.outcome(), started.elapsed());
                        return stopped;
                    }
                };
                match (res, cancel.reason()) {
                    (Ok(data), _) => RunResult::success(data, String::new()),
                    // Stopped, and it noticed before the service did: the reason comes first.
                    (Err(msg), Some(reason)) => {
                        let mut stopped =
                            RunResult::failure(String::new(), format!("{reason}: {msg}"));
                        stopped.stopped = Some(reason.clone());
                        stopped
                    }
                    (Err(msg), None) => RunResult::failure(String::new(), msg),
                }
            }
        };
        self.store.put(record.ended(&result));
        let result = self.log_end(&log, session, started, result);
        crate::metrics::run_ended(&task.name, result.outcome(), started.elapsed());
        result
    }

    /// Queues the record of a run that starts now and returns it, for its end to update.
    fn record_start(
        &self,
        task: &Task,
        input: &Input,
        session: Uuid,
        is_async: bool,
        command: String,
    ) -> Record {
        let record = Record::started(
            Start {
                session,
                task: &task.name,
                cluster_type: &task.cluster_type,
                path: &task.path,
                is_async,
                args: input.as_json(),
                command,
            },
            self.store.owner(),
        );
        self.store.put(record.clone());
        record
    }

    /// Starts the result store; a session another replica asks to kill is killed here. From
    /// then on `/readyz` also checks that the store is connected or spooling.
    pub async fn start_store(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        let app = Arc::downgrade(self);
        let wait = self.settings.kill_grace;
        let store = self.store.clone();
        self.readiness.add(Arc::new(move || {
            let status = store.status();
            crate::health::Check {
                name: "store".into(),
                ready: status.state.is_ready(),
                detail: format!(
                    "{} {} ({}; {} queued, {} spooled)",
                    status.backend,
                    status.state,
                    status.location,
                    status.queue_depth,
                    status.spool_size
                ),
            }
        }));
        self.store
            .start(Arc::new(move |id| {
                if let Some(app) = app.upgrade() {
                    tokio::spawn(async move {
                        let _ = app.sessions.kill(id, wait).await;
                    });
                }
            }))
            .await
    }

    /// Logs how a run ended and hands its result on.
    fn log_end(
        &self,
        log: &TaskLog,
        session: Uuid,
        started: Instant,
        result: RunResult,
    ) -> RunResult {
        let took = started.elapsed();
        if result.ok {
            log.event(session, format_args!("done in {took:.3?}"));
        } else {
            log.event(
                session,
                format_args!("failed in {took:.3?}: {}", result.msg),
            );
        }
        result
    }

    /// Runs a task and waits for it. If the caller goes away (`client_gone` resolves, or this
    /// future is dropped), the run is cancelled and its process group killed.
    pub async fn run_sync(
        self: &Arc<Self>,
        task: Arc<Task>,
        input: Input,
        slot: Slot,
        client_gone: impl Future<Output = ()>,
    ) -> RunResult {
        let (guard, mut handle) = self.start_sync(task, input, slot);
        let joined = tokio::select! {
            r = &mut handle => r,
            () = client_gone => {
                // Cancel through the guard (it logs why), then wait for the group to be reaped.
                drop(guard);
                return joined_result(handle.await);
            }
        };
        guard.disarm();
        joined_result(joined)
    }

    /// Starts a sync run as a tracked task, with the guard that cancels it if the caller goes.
    ///
    /// A plain function on purpose: built inside `run_sync`, the run's future (over 2 KB) took
    /// room in `run_sync`'s own future as well, and so in the HTTP handler's, which poem boxes
    /// and copies for every call (BENCHMARKS.md, step 15).
    fn start_sync(
        self: &Arc<Self>,
        task: Arc<Task>,
        input: Input,
        slot: Slot,
    ) -> (DisconnectGuard, JoinHandle<RunResult>) {
        let session = slot.id;
        let cancel = slot.stop.clone();
        let guard = DisconnectGuard {
            app: self.clone(),
            task: task.clone(),
            session,
            cancel: cancel.clone(),
            armed: true,
        };
        let app = self.clone();
        let handle = self
            .tracker
            .spawn(async move { app.controlled(&task, input, slot, None).await });
        (guard, handle)
    }

    /// Starts a session for `task` and returns its id; the session exists when this returns.
    pub fn start_async(self: &Arc<Self>, task: Arc<Task>, input: Input, slot: Slot) -> Uuid {
        let id = slot.id;
        self.sessions
            .create_for(id, slot.stop.clone(), task.path.clone(), input.as_json());
        let app = self.clone();
        self.tracker.spawn(async move {
            let progress: Progress = {
                let app = app.clone();
                Arc::new(move |line: &[u8]| {
                    app.sessions
                        .progress(id, String::from_utf8_lossy(line).into_owned());
                })
            };
            let result = app.controlled(&task, input, slot, Some(progress)).await;
            app.sessions.finish(id, result);
        });
        id
    }
}

impl App {
    /// Runs an admitted task under run control: after the runs it replaces have ended, and
    /// within its timeout. The slot is given back when the run is over.
    async fn controlled(
        &self,
        task: &Task,
        input: Input,
        slot: Slot,
        progress: Option<Progress>,
    ) -> RunResult {
        slot.replaced_ended(self.settings.kill_grace).await;
        let limit = self.control.timeout(task);
        let run = self.execute(task, input, slot.id, slot.stop.clone(), progress);
        control::limited(run, &slot.stop, limit).await
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

/// Cancels a sync run whose HTTP request was dropped before the run ended.
struct DisconnectGuard {
    app: Arc<App>,
    task: Arc<Task>,
    session: Uuid,
    cancel: Stop,
    armed: bool,
}

impl DisconnectGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.armed {
            self.app
                .logs
                .get(&self.task.name)
                .event(self.session, "cancelled: the client disconnected");
            self.cancel.stop(StopReason::ClientGone);
        }
    }
}

/// Arguments as a shell would need them typed, space-separated: what `shell_words::join` makes,
/// written straight into the log record instead of into a string of its own first.
struct QuotedArgs<'a>(&'a [std::ffi::OsString]);

impl std::fmt::Display for QuotedArgs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, arg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&shell_words::quote(&arg.to_string_lossy()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::QuotedArgs;

    #[test]
    fn quoted_args_read_as_shell_words_join_writes_them() {
        let args: Vec<OsString> = ["-c", "echo hello", "it's", "", "$HOME", "plain"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let joined = shell_words::join(args.iter().map(|a| a.to_string_lossy()));
        assert_eq!(QuotedArgs(&args).to_string(), joined);
        assert_eq!(
            shell_words::split(&joined).unwrap(),
            ["-c", "echo hello", "it's", "", "$HOME", "plain"]
        );
        assert_eq!(QuotedArgs(&[]).to_string(), "");
    }
}
