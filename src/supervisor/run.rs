//! One run's way from admission to its end: what it runs ([`prepare`]), its admission, its start
//! after the runs it replaces, its time limit, and its one finish.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Instant;

use chrono::Local;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::deadlines::limited;
use super::events::{Mode, RunEvent, RunInfo};
use super::registry::{Admitted, Live, Refusal};
use super::work::{Builtin, External, Work, WorkCtx};
use super::{told, Input, Supervisor};
use crate::runner::{Ending, RunResult, StopReason};
use crate::table::{Task, TaskKind};

/// What a run executes: one of the two kinds of [`Work`].
enum Body {
    External(External),
    Builtin(Builtin),
}

impl Work for Body {
    async fn run(self, ctx: WorkCtx) -> Ending {
        match self {
            Self::External(w) => w.run(ctx).await,
            Self::Builtin(w) => w.run(ctx).await,
        }
    }
}

impl Supervisor {
    /// Admits a sync run and starts it as a tracked task, with the guard that stops it if the
    /// caller goes. A plain function, so the run's future is not part of the caller's.
    pub(super) fn spawn_sync(
        self: &Arc<Self>,
        task: Arc<Task>,
        input: Input,
    ) -> Result<(HangUp, JoinHandle<Arc<RunResult>>), Refusal> {
        let (admitted, body) = self.admit(task, input, Mode::Sync)?;
        let hang_up = HangUp {
            live: admitted.live.clone(),
            armed: true,
        };
        let handle = self.tracker.spawn(self.clone().drive(admitted, body));
        Ok((hang_up, handle))
    }

    /// Admits an async run and starts it; it is a session from now on.
    pub(super) fn spawn_async(
        self: &Arc<Self>,
        task: Arc<Task>,
        input: Input,
    ) -> Result<Uuid, Refusal> {
        let (admitted, body) = self.admit(task, input, Mode::Async)?;
        let id = admitted.live.info.id;
        self.tracker.spawn(self.clone().drive(admitted, body));
        Ok(id)
    }

    fn admit(
        &self,
        task: Arc<Task>,
        input: Input,
        mode: Mode,
    ) -> Result<(Admitted, Body), Refusal> {
        let id = Uuid::new_v4();
        let (args, command, body) = self.prepare(&task, input, id);
        let info = Arc::new(RunInfo {
            id,
            log: self.logs.get(&task.name),
            task,
            mode,
            args,
            command,
            start_at: Local::now(),
            started: Instant::now(),
        });
        let admitted = self
            .registry
            .admit(info, self.admission, self.retained.len())?;
        Ok((admitted, body))
    }

    /// The run's arguments as sessions show them, its command line, and its work.
    fn prepare(&self, task: &Task, input: Input, id: Uuid) -> (serde_json::Value, String, Body) {
        match (input, &task.kind) {
            (
                Input::Args(posted),
                TaskKind::External {
                    invocation,
                    task: ext,
                },
            ) => {
                let args = invocation.args(&posted);
                let command = format!(
                    "{} {}",
                    invocation.program.to_string_lossy(),
                    QuotedArgs(&args)
                );
                let mut vars = vec![
                    ("CS_TASK_NAME", task.name.clone()),
                    ("CS_CLUSTER_TYPE", task.cluster_type.clone()),
                    ("CS_SESSION_ID", id.to_string()),
                ];
                vars.extend(self.child_env.iter().cloned());
                let work = External {
                    program: invocation.program.clone(),
                    args,
                    vars,
                    tracking: self.tracking.clone(),
                    detach: ext.detach_children,
                };
                (posted.into(), command, Body::External(work))
            }
            (Input::Builtin(prepared, params), _) => {
                let work = Builtin {
                    prepared,
                    path: task.path.clone(),
                };
                (
                    params,
                    format!("builtin /{}", task.path),
                    Body::Builtin(work),
                )
            }
            (Input::Args(posted), TaskKind::Builtin(_)) => {
                // The body of a built-in task is parsed into its parameters, never into
                // arguments; should that change, the run fails instead of running wrongly.
                let why = "arguments were given to a built-in task".to_string();
                let work = Builtin {
                    prepared: Box::new(move |_| Box::pin(async move { Err(why) })),
                    path: task.path.clone(),
                };
                (
                    posted.into(),
                    format!("builtin /{}", task.path),
                    Body::Builtin(work),
                )
            }
        }
    }

    /// The whole life of an admitted run, from the end of the runs it replaces to its result.
    async fn drive(self: Arc<Self>, admitted: Admitted, body: Body) -> Arc<RunResult> {
        let Admitted { live, replaced } = admitted;
        let mut end = EndGuard {
            sup: self.clone(),
            live: live.clone(),
            done: false,
        };
        let all = async {
            for ended in &replaced {
                ended.cancelled().await;
            }
        };
        let _ = tokio::time::timeout(self.deadlines.stopped_within(), all).await;
        self.bus.publish(RunEvent::Started(live.info.clone()));
        let ctx = WorkCtx {
            id: live.info.id,
            stop: live.stop.clone(),
            grace: self.deadlines.grace,
            log: live.info.log.clone(),
            progress: told(&self, &live),
        };
        let limit = self.deadlines.limit(&live.info.task);
        let ending = limited(body.run(ctx), &live.stop, limit).await;
        let result = Arc::new(RunResult::finish(ending, live.stop.reason()));
        end.finish(result.clone());
        result
    }
}

/// Publishes a run's end and takes it out of the registry, also when the run's future is
/// dropped half-way (its runtime shut down under it), so no run is left without an end.
struct EndGuard {
    sup: Arc<Supervisor>,
    live: Arc<Live>,
    done: bool,
}

impl EndGuard {
    fn finish(&mut self, result: Arc<RunResult>) {
        self.done = true;
        let info = self.live.info.clone();
        let end_at = Local::now();
        let _ = self.live.result.set((result.clone(), end_at));
        self.sup.bus.publish(RunEvent::Ended {
            took: info.started.elapsed(),
            info,
            result,
            end_at,
        });
        self.sup.registry.remove(self.live.info.id);
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if !self.done {
            let why = "the run was dropped by the service before it ended".to_string();
            self.finish(Arc::new(RunResult::failure(String::new(), why)));
        }
    }
}

/// Stops a sync run whose caller went away before it ended.
pub(super) struct HangUp {
    live: Arc<Live>,
    armed: bool,
}

impl HangUp {
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for HangUp {
    fn drop(&mut self) {
        if self.armed {
            let info = &self.live.info;
            info.log
                .event(info.id, "cancelled: the client disconnected");
            self.live.stop.stop(StopReason::ClientGone);
        }
    }
}

/// Arguments as a shell would need them typed, space-separated: what `shell_words::join` makes,
/// written straight into the command line instead of into a string of its own first.
struct QuotedArgs<'a>(&'a [OsString]);

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
