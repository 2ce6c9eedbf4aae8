//! How a run ends: what its work reports ([`Ending`]) and the one result made from it
//! ([`RunResult`]), with every failure text a run can end with, for external programs and
//! built-in tasks alike. The result goes from here to the HTTP answer, the session and the
//! record unchanged.

use std::process::ExitStatus;

use super::StopReason;

/// How one run ended, in the terms of the `{code, data, msg}` answer; a session shows `data` as
/// its `message` and, on failure, `msg` as its `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// Whether the run succeeded.
    pub ok: bool,
    /// The last non-empty stdout line, or a built-in task's result.
    pub data: String,
    /// On success the last non-empty stderr line; on failure the failure text.
    pub msg: String,
    /// The exit code of an external task that exited by itself.
    pub exit_code: Option<i32>,
    /// Why the run was ended early, if it was.
    pub stopped: Option<StopReason>,
    /// The last non-empty stderr line as the process wrote it (`msg` holds the failure text
    /// instead when the run failed); for the result store.
    pub stderr_last: String,
    /// The signal that ended an external task, if one did.
    pub signal: Option<i32>,
}

/// What a run's work reports when it is over, before it becomes a [`RunResult`].
#[derive(Debug)]
pub struct Ending {
    /// The last non-empty stdout line of an external program.
    pub stdout_last: String,
    /// Its last non-empty stderr line.
    pub stderr_last: String,
    /// How the work ended.
    pub how: How,
    /// Whether the work saw the stop request and ended because of it.
    pub stopped: bool,
}

/// How a run's work ended.
#[derive(Debug)]
pub enum How {
    /// The work could not start; the text says why.
    NotStarted(String),
    /// An external program's leader ended (`Err`: it could not be waited for).
    Exited(Result<ExitStatus, String>),
    /// A built-in task returned its result or its failure text.
    Returned(Result<String, String>),
    /// A built-in task did not end within the grace after it was asked to stop.
    Abandoned,
}

impl Ending {
    /// Work that could not start.
    pub fn not_started(why: String) -> Self {
        Self::of(How::NotStarted(why), false)
    }

    /// A built-in task that returned; `stopped` when it returned after being asked to stop.
    pub fn returned(result: Result<String, String>, stopped: bool) -> Self {
        Self::of(How::Returned(result), stopped)
    }

    /// A built-in task given up on after its grace.
    pub fn abandoned() -> Self {
        Self::of(How::Abandoned, true)
    }

    fn of(how: How, stopped: bool) -> Self {
        Self {
            stdout_last: String::new(),
            stderr_last: String::new(),
            how,
            stopped,
        }
    }
}

impl RunResult {
    /// The one result of a run whose work reported `ending`; `reason` is why the run was asked
    /// to stop, if it was.
    pub fn finish(ending: Ending, reason: Option<&StopReason>) -> Self {
        let stopped = || reason.cloned().unwrap_or(StopReason::Killed);
        match ending.how {
            How::NotStarted(why) => Self::failure(String::new(), why),
            How::Exited(exit) => Self::of_process(
                ending.stdout_last,
                ending.stderr_last,
                exit,
                ending.stopped.then(stopped),
            ),
            How::Returned(Ok(data)) if !ending.stopped => Self::success(data, String::new()),
            // Failed after a stop (noticed by the task or by the service): the reason first.
            How::Returned(Err(msg)) if ending.stopped || reason.is_some() => {
                let reason = stopped();
                let mut r = Self::failure(String::new(), format!("{reason}: {msg}"));
                r.stopped = Some(reason);
                r
            }
            How::Returned(Err(msg)) => Self::failure(String::new(), msg),
            How::Returned(Ok(_)) | How::Abandoned => {
                let reason = stopped();
                let mut r = Self::failure(String::new(), reason.to_string());
                r.stopped = Some(reason);
                r
            }
        }
    }

    /// A successful run.
    pub fn success(data: String, msg: String) -> Self {
        Self::ended(true, data, msg)
    }

    /// A failed run, with the text saying why.
    pub fn failure(data: String, msg: String) -> Self {
        Self::ended(false, data, msg)
    }

    fn ended(ok: bool, data: String, msg: String) -> Self {
        Self {
            ok,
            data,
            msg,
            exit_code: None,
            stopped: None,
            stderr_last: String::new(),
            signal: None,
        }
    }

    /// How the run ended, as a short stable label for records and metrics: `ok`, `failed`, or
    /// why it was stopped ([`StopReason::as_str`]).
    pub fn outcome(&self) -> &'static str {
        match (&self.stopped, self.ok) {
            (Some(reason), _) => reason.as_str(),
            (None, true) => "ok",
            (None, false) => "failed",
        }
    }

    /// What a session shows as its `error`: `""` on success, the failure text otherwise.
    pub fn error(&self) -> &str {
        if self.ok {
            ""
        } else {
            &self.msg
        }
    }

    /// The result of an external task from its last output lines and how its leader ended
    /// (`Err`: it could not be waited for); `stopped` when the run was ended early, and why.
    fn of_process(
        stdout_last: String,
        stderr_last: String,
        exit: Result<ExitStatus, String>,
        stopped: Option<StopReason>,
    ) -> Self {
        use std::os::unix::process::ExitStatusExt;

        let (code, signal) = match &exit {
            Ok(status) => (status.code(), status.signal()),
            Err(_) => (None, None),
        };
        let failure = if let Some(reason) = &stopped {
            // Only a kill on request names the signal (as it always has); the other reasons are
            // exact texts a poller may read (`replaced by <id>`, `timed out after 30s`).
            Some(match (reason, signal) {
                (StopReason::Killed, Some(sig)) => format!("{reason} (signal {sig})"),
                _ => reason.to_string(),
            })
        } else if let Err(e) = exit {
            Some(format!("cannot wait for the process: {e}"))
        } else if code == Some(0) {
            None
        } else if !stderr_last.is_empty() {
            Some(stderr_last.clone())
        } else {
            Some(match (code, signal) {
                (_, Some(sig)) => format!("killed by signal {sig}"),
                (Some(code), None) => format!("exited with code {code}"),
                (None, None) => "ended without an exit status".to_string(),
            })
        };
        Self {
            ok: failure.is_none(),
            data: stdout_last,
            msg: failure.unwrap_or_else(|| stderr_last.clone()),
            exit_code: code,
            stopped,
            stderr_last,
            signal,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn of(stderr: &str, raw_status: i32, cancelled: bool) -> RunResult {
        RunResult::of_process(
            "out".into(),
            stderr.into(),
            Ok(ExitStatus::from_raw(raw_status)),
            cancelled.then_some(StopReason::Killed),
        )
    }

    #[test]
    fn failure_text_follows_the_answer_table() {
        // Raw wait statuses: exit code N is N << 8, killed by signal S is S.
        let ok = of("warn", 0, false);
        assert_eq!((ok.ok, ok.msg.as_str(), ok.error()), (true, "warn", ""));
        assert_eq!(ok.exit_code, Some(0));
        assert_eq!(of("", 3 << 8, false).msg, "exited with code 3");
        assert_eq!(of("boom", 3 << 8, false).msg, "boom");
        let killed = of("", 9, false);
        assert_eq!(
            (killed.msg.as_str(), killed.exit_code),
            ("killed by signal 9", None)
        );
        assert_eq!(of("boom", 15, true).msg, "killed on request (signal 15)");
        let cancelled = of("", 143 << 8, true);
        assert_eq!(cancelled.error(), "killed on request");
        assert_eq!(cancelled.exit_code, Some(143));
        let lost = RunResult::of_process(String::new(), String::new(), Err("x".into()), None);
        assert_eq!(lost.msg, "cannot wait for the process: x");
    }

    #[test]
    fn builtin_endings_read_as_the_answer_table() {
        let done = RunResult::finish(Ending::returned(Ok("x".into()), false), None);
        assert_eq!(
            (done.ok, done.data.as_str(), done.msg.as_str()),
            (true, "x", "")
        );
        let failed = RunResult::finish(Ending::returned(Err("bad".into()), false), None);
        assert_eq!((failed.ok, failed.msg.as_str()), (false, "bad"));
        assert_eq!(failed.outcome(), "failed");
        let killed = RunResult::finish(
            Ending::returned(Err("canceled".into()), true),
            Some(&StopReason::Killed),
        );
        assert_eq!(killed.msg, "killed on request: canceled");
        assert_eq!(killed.outcome(), "killed");
        let abandoned = RunResult::finish(Ending::abandoned(), Some(&StopReason::Shutdown));
        assert_eq!(abandoned.msg, "stopped: the service shut down");
        let not_started = RunResult::finish(Ending::not_started("cannot start `x`".into()), None);
        assert_eq!(
            (not_started.ok, not_started.msg.as_str()),
            (false, "cannot start `x`")
        );
    }

    #[test]
    fn outcome_names_how_the_run_ended() {
        assert_eq!(of("", 0, false).outcome(), "ok");
        assert_eq!(of("", 1 << 8, false).outcome(), "failed");
        assert_eq!(of("", 15, true).outcome(), "killed");
        let timed_out = RunResult::of_process(
            String::new(),
            String::new(),
            Ok(ExitStatus::from_raw(15)),
            Some(StopReason::TimedOut(std::time::Duration::from_secs(90))),
        );
        assert_eq!(timed_out.outcome(), "timed_out");
        assert_eq!(timed_out.msg, "timed out after 1m 30s");
    }
}
