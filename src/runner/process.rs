//! One child process from spawn to reaping: its own process group, both output streams read
//! concurrently into the task log, and SIGTERM, a grace period, then SIGKILL on cancellation.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use process_wrap::tokio::{CommandWrap, ProcessGroup};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::logs::{Lines, Stream, TaskLog};

/// A line longer than this is logged in pieces and only its tail piece is kept as "last line", so
/// a task printing one endless line cannot grow the service's memory.
const MAX_LINE: usize = 1024 * 1024;

/// Output is read into a buffer that starts small, because most runs print a few short lines and
/// a large zeroed buffer per stream per run showed in the profile (bench/, BENCHMARKS.md), and
/// grows to a pipe's capacity as soon as one read fills it, so a task printing megabytes is read
/// in few large reads.
const READ_START: usize = 512;
const READ_MAX: usize = 64 * 1024;

/// Once the process group has exited, how long its pipes may stay open (held by a process that
/// left the group) before we stop reading them, like Go's `Cmd.WaitDelay`.
const PIPE_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Something told a line of output.
pub type LineSink = dyn Fn(&[u8]) + Send + Sync;

/// Everything a run needs besides the argv.
pub struct RunEnv<'a> {
    /// Extra environment variables on top of the service's own.
    pub vars: Vec<(&'static str, String)>,
    /// Where output lines go.
    pub log: &'a TaskLog,
    /// The run's id, written on every log line.
    pub session: Uuid,
    /// Cancelled to kill the run.
    pub cancel: CancellationToken,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Told the latest non-empty stdout line, at most once per read, while the run goes on
    /// (an async session shows it as its `message`).
    pub on_stdout: Option<&'a LineSink>,
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The last non-empty stdout line.
    pub stdout_last: String,
    /// The last non-empty stderr line.
    pub stderr_last: String,
    /// The exit code, when the process exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    /// Why the process could not be started or waited for.
    pub spawn_error: Option<String>,
    /// Whether the run was cancelled (killed on request, shutdown or client disconnect).
    pub cancelled: bool,
}

impl Outcome {
    /// Whether the run succeeded.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.cancelled
    }

    /// The failure text for a failed run: the last stderr line, else what ended the process.
    pub fn failure_text(&self) -> String {
        if self.cancelled {
            return match self.signal {
                Some(sig) => format!("killed on request (signal {sig})"),
                None => "killed on request".to_string(),
            };
        }
        if let Some(e) = &self.spawn_error {
            return e.clone();
        }
        if !self.stderr_last.is_empty() {
            return self.stderr_last.clone();
        }
        match (self.exit_code, self.signal) {
            (_, Some(sig)) => format!("killed by signal {sig}"),
            (Some(code), None) => format!("exited with code {code}"),
            (None, None) => "ended without an exit status".to_string(),
        }
    }
}

/// Runs `program args…` to the end (or until cancelled) and reports how it went.
pub async fn run(program: &OsString, args: &[OsString], env: RunEnv<'_>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut command = CommandWrap::with_new(program, |c| {
        c.args(args)
            .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(null_stdin())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    });
    command.wrap(ProcessGroup::leader());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let text = format!("cannot start `{}`: {e}", program.to_string_lossy());
            env.log.event(env.session, &text);
            outcome.spawn_error = Some(text);
            return outcome;
        }
    };
    // The leader's pid is the group id; record it now, before anything can reap the leader.
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let stdout = child.stdout().take();
    let stderr = child.stderr().take();

    let mut out_last = Vec::new();
    let mut err_last = Vec::new();
    let mut status = None;
    {
        let reading = async {
            tokio::join!(
                pump(stdout, Stream::Stdout, &env, &mut out_last),
                pump(stderr, Stream::Stderr, &env, &mut err_last)
            )
        };
        let waiting = async {
            let mut kill_at: Option<Instant> = None;
            let mut terminated = false;
            loop {
                tokio::select! {
                    st = child.wait() => return (st, terminated),
                    _ = env.cancel.cancelled(), if !terminated => {
                        terminated = true;
                        signal_group(pgid, Signal::SIGTERM);
                        kill_at = Some(Instant::now() + env.grace);
                    }
                    _ = sleep_until_opt(kill_at) => {
                        signal_group(pgid, Signal::SIGKILL);
                        kill_at = None;
                    }
                }
            }
        };
        tokio::pin!(reading, waiting);
        let mut read_done = false;
        let mut drain_until: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = &mut reading, if !read_done => {
                    read_done = true;
                    if status.is_some() { break; }
                }
                st = &mut waiting, if status.is_none() => {
                    status = Some(st);
                    if read_done { break; }
                    drain_until = Some(Instant::now() + PIPE_DRAIN_LIMIT);
                }
                _ = sleep_until_opt(drain_until) => {
                    env.log.event(env.session, "output pipes still open after the process group exited; stopped reading");
                    break;
                }
            }
        }
    }
    outcome.stdout_last = String::from_utf8_lossy(&out_last).into_owned();
    outcome.stderr_last = String::from_utf8_lossy(&err_last).into_owned();
    match status {
        Some((Ok(st), cancelled)) => {
            outcome.exit_code = st.code();
            outcome.signal = st.signal();
            outcome.cancelled = cancelled;
        }
        Some((Err(e), cancelled)) => {
            outcome.spawn_error = Some(format!("cannot wait for the process: {e}"));
            outcome.cancelled = cancelled;
        }
        None => outcome.spawn_error = Some("the process was not waited for".into()),
    }
    outcome
}

/// The stdin of every child: `/dev/null`, opened once and duplicated per spawn, which costs less
/// than walking the path again for every run (the benchmark showed the `open` in the profile).
fn null_stdin() -> Stdio {
    static DEV_NULL: OnceLock<Option<File>> = OnceLock::new();
    DEV_NULL
        .get_or_init(|| File::open("/dev/null").ok())
        .as_ref()
        .and_then(|f| f.try_clone().ok())
        .map_or_else(Stdio::null, Stdio::from)
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH only means the group is already gone, which is what we want.
        let _ = killpg(pgid, signal);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads one stream to its end, logging every line and keeping the last non-empty one in `last`.
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    stream: Stream,
    env: &RunEnv<'_>,
    last: &mut Vec<u8>,
) {
    let Some(mut reader) = reader else { return };
    let mut buf: Vec<u8> = Vec::with_capacity(READ_START);
    let mut line: Vec<u8> = Vec::new();
    let mut lines = env.log.lines(env.session, stream);
    // The last line already passed to `on_stdout`, so an unchanged one is not passed again.
    let mut told: Vec<u8> = Vec::new();
    let emit = |lines: &mut Lines<'_>, line: &mut Vec<u8>, last: &mut Vec<u8>| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        lines.push(line);
        if !line.is_empty() {
            std::mem::swap(last, line);
        }
        line.clear();
    };
    loop {
        buf.clear();
        // `read_buf` fills the spare capacity without zeroing it first.
        let n = match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n == buf.capacity() && n < READ_MAX {
            buf.reserve(READ_MAX);
        }
        // The complete lines of one read go to the log in one write, as soon as they are read.
        let mut chunk = &buf[..n];
        while let Some(pos) = memchr::memchr(b'\n', chunk) {
            line.extend_from_slice(&chunk[..pos]);
            emit(&mut lines, &mut line, last);
            chunk = &chunk[pos + 1..];
        }
        line.extend_from_slice(chunk);
        if line.len() >= MAX_LINE {
            emit(&mut lines, &mut line, last);
        }
        lines.write();
        if stream == Stream::Stdout && last.as_slice() != told.as_slice() {
            if let Some(tell) = env.on_stdout {
                tell(last);
                told.clone_from(last);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut lines, &mut line, last);
        lines.write();
    }
}
