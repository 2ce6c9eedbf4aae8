//! One run of an external task from spawn to its end: the child in a process group of its own
//! ([`command`](super::command)), both output streams read concurrently into the task log, the
//! leader's exit, and the group ended through [`end_run`] when the run is cancelled.

use std::ffi::{OsStr, OsString};
use std::io;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use uuid::Uuid;

use super::command;
use super::group::{end_run, Group, Leader};
use super::tracking::Tracking;
use super::{Ending, How, Stop};
use crate::logs::{Lines, Stream, TaskLog};

/// A line longer than this is logged in pieces and only its tail piece is kept as "last line", so
/// a task printing one endless line cannot grow the service's memory.
const MAX_LINE: usize = 1024 * 1024;

/// Output is read into a buffer that starts small, because most runs print a few short lines and
/// zeroing a large buffer per stream per run costs more than the run's own reads, and grows to a
/// pipe's capacity as soon as one read fills it, so a task printing megabytes is read in few
/// large reads.
const READ_START: usize = 512;
const READ_MAX: usize = 64 * 1024;

/// Once the program has exited (or its group has been ended), how long its pipes may stay open
/// (held by a process that left the group, say) before we stop reading them, like Go's
/// `Cmd.WaitDelay`.
const PIPE_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// With `detach_children`, how long the pipes are read on after the program has exited: what it
/// wrote is already in them, and a daemon it left may hold them open for ever.
const DETACHED_DRAIN_LIMIT: Duration = Duration::from_millis(100);

/// Something told a line of output.
pub type LineSink = dyn Fn(&[u8]) + Send + Sync;

/// Told the latest output line of a running task (of a built-in task, its latest log line), so
/// an async session can show it as its `message`.
pub type Progress = std::sync::Arc<LineSink>;

/// Everything a run needs besides the argv.
pub struct RunEnv<'a> {
    /// Extra environment variables on top of the service's own.
    pub vars: &'a [(&'static str, &'a str)],
    /// Where output lines go.
    pub log: &'a TaskLog,
    /// The run's id, written on every log line.
    pub session: Uuid,
    /// Cancelled to end the run (kill on request, client gone, shutdown).
    pub cancel: Stop,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Told the latest non-empty stdout line, at most once per read, while the run goes on
    /// (an async session shows it as its `message`).
    pub on_stdout: Option<&'a LineSink>,
    /// How every process of the run is found (`None`: its process group only).
    pub tracking: Option<&'a Tracking>,
    /// Leave what the program started running when it exits by itself (`detach_children`).
    pub detach: bool,
}

/// What the run loop does next.
enum Next {
    Go,
    /// End every process of the run, reading the output meanwhile.
    End,
    Stop,
}

/// Runs `program args…` to the end (or until cancelled) and reports how it went.
///
/// The run is over when the program has exited and both pipes are closed (or have stayed open
/// [`PIPE_DRAIN_LIMIT`] past the exit). Cancelled, it is over once [`end_run`] has ended its
/// whole process group, and the pipes are closed or drained likewise.
pub async fn run(program: &OsStr, args: &[OsString], env: RunEnv<'_>) -> Ending {
    let (mut child, mut group, pid) = match start(program, args, &env) {
        Ok(started) => started,
        Err(why) => {
            env.log.event(env.session, &why);
            return Ending::not_started(why);
        }
    };
    let stdout = child.stdout().take();
    let stderr = child.stderr().take();
    let mut leader = Leader::new(leader_wait(&mut child));
    let mut out_last = Vec::new();
    let mut err_last = Vec::new();
    let reading = async {
        tokio::join!(
            pump(stdout, Stream::Stdout, &env, &mut out_last),
            pump(stderr, Stream::Stderr, &env, &mut err_last)
        );
    };
    let watched = watch(reading, &mut group, &mut leader, &env).await;
    if !watched.ended && env.detach {
        group.left_running(env.log, env.session);
        if let Some(Err(e)) = group.procs().map(|p| p.release()) {
            env.log.event(
                env.session,
                format_args!(
                    "cannot let the run's processes go: {e}; they stay in the run's cgroup"
                ),
            );
        }
    }
    group.settle();
    if let Some(procs) = group.procs() {
        procs.leader_reaped(pid);
        procs.reap_orphans();
    }
    let exit = match leader.exit() {
        Some(exit) => exit.clone(),
        // Not reached: the watch ends only with the leader reaped, or past the drain limit after it.
        None => Err("the process was not waited for".to_string()),
    };
    Ending {
        stdout_last: String::from_utf8_lossy(&out_last).into_owned(),
        stderr_last: String::from_utf8_lossy(&err_last).into_owned(),
        how: How::Exited(exit),
        stopped: watched.cancelled,
    }
}

/// Starts the leader with the run's tracking ready, and moves it (with what it forked meanwhile)
/// into the run's cgroup. `Err` says why the run could not start; nothing of it is left then.
fn start(
    program: &OsStr,
    args: &[OsString],
    env: &RunEnv<'_>,
) -> Result<(command::Child, Group, i32), String> {
    let procs = env
        .tracking
        .map(|t| t.start_run(env.session))
        .transpose()
        .map_err(|e| format!("cannot create the run's cgroup: {e}"))?;
    let spawning = procs.as_ref().map(|p| p.spawning());
    let mut child =
        command::spawn(program, args, env.vars).map_err(|e| start_failure(program, &e))?;
    // The group's id is the leader's pid, recorded now, while the leader surely exists.
    let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return Err("the process was gone before it could be watched".to_string());
    };
    if let Some(procs) = &procs {
        procs.leader_started(pid);
    }
    drop(spawning);
    let adopted = procs.as_ref().map_or(Ok(()), |p| p.adopt(pid));
    // Made before the leader's wait, so it is dropped after it: a run dropped half-way (its
    // runtime shut down under it), or one that fails here, has its whole group killed.
    let group = Group::new(Pid::from_raw(pid), procs);
    adopted.map_err(|e| match e.raw_os_error() {
        // Out of descriptors while the run's processes were read: said as at the spawn.
        Some(nix::libc::EMFILE | nix::libc::ENFILE) => start_failure(program, &e),
        _ => format!("cannot move the process into the run's cgroup: {e}"),
    })?;
    // Not taken from `child` here: the leader's wait borrows it.
    let _ = &mut child;
    Ok((child, group, pid))
}

/// How the watch of a run ended.
struct Watched {
    /// The run was asked to stop, and was ended.
    cancelled: bool,
    /// Every process of the run has been ended (after a stop, or after the leader's exit).
    ended: bool,
}

/// Reads the output and waits for the leader, ending the run's processes when it is asked to
/// stop or when the leader exits leaving some behind.
async fn watch(
    reading: impl std::future::Future<Output = ()>,
    group: &mut Group,
    leader: &mut Leader<'_>,
    env: &RunEnv<'_>,
) -> Watched {
    tokio::pin!(reading);
    let mut w = Watched {
        cancelled: false,
        ended: false,
    };
    let mut read_done = false;
    let mut drain_until: Option<Instant> = None;
    while !(read_done && leader.is_reaped()) {
        let next = tokio::select! {
            () = &mut reading, if !read_done => {
                read_done = true;
                Next::Go
            }
            () = leader.reaped(), if !leader.is_reaped() => {
                let limit = if env.detach { DETACHED_DRAIN_LIMIT } else { PIPE_DRAIN_LIMIT };
                drain_until = Some(Instant::now() + limit);
                after_exit(group, env, w.ended)
            }
            () = env.cancel.cancelled(), if !w.cancelled && !w.ended => {
                w.cancelled = true;
                Next::End
            }
            () = sleep_until_opt(drain_until), if !read_done => {
                env.log.event(env.session, "output pipes still open after the process group exited; stopped reading");
                Next::Stop
            }
        };
        match next {
            Next::Go => {}
            Next::Stop => break,
            Next::End => {
                w.ended = true;
                // The output is read on while the run is ended: a process blocked on a full
                // pipe must be able to get to its end.
                let ending = end_run(group, leader, env.grace, env.log, env.session);
                tokio::pin!(ending);
                loop {
                    tokio::select! {
                        () = &mut ending => break,
                        () = &mut reading, if !read_done => read_done = true,
                    }
                }
                drain_until.get_or_insert(Instant::now() + PIPE_DRAIN_LIMIT);
            }
        }
    }
    w
}

/// What follows the leader's exit: whatever it left running (in its group or not) is ended now,
/// so a background child holding its output cannot hold the run, and nothing of it outlives it;
/// unless the task lets its children go on (`detach_children`).
fn after_exit(group: &Group, env: &RunEnv<'_>, ended: bool) -> Next {
    if env.detach || ended {
        return Next::Go;
    }
    let left = group.alive();
    if left == 0 {
        return Next::Go;
    }
    env.log.event(
        env.session,
        format_args!("the program exited leaving {left} process(es) running; ending them"),
    );
    Next::End
}

/// The leader's own wait (tokio's), not process-wrap's group wait: that one also reaps every
/// other member of the group that is the service's child, which under the subreaper includes
/// the group's orphans, and so would not return while one of them runs.
fn leader_wait(
    child: &mut command::Child,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = io::Result<std::process::ExitStatus>> + Send + '_>,
> {
    fn innermost(
        c: &mut dyn process_wrap::tokio::ChildWrapper,
    ) -> &mut dyn process_wrap::tokio::ChildWrapper {
        if (c as &dyn std::any::Any).is::<tokio::process::Child>() {
            c
        } else {
            innermost(c.inner_mut())
        }
    }
    innermost(child.as_mut()).wait()
}

/// The failure text of a run that could not be started; running out of descriptors is said in
/// plain words, as the operator's fix (the open-files limit) is not in the OS error's text.
fn start_failure(program: &OsStr, e: &io::Error) -> String {
    let program = program.to_string_lossy();
    match e.raw_os_error() {
        Some(nix::libc::EMFILE) => format!("cannot start `{program}`: too many open files"),
        Some(nix::libc::ENFILE) => {
            format!("cannot start `{program}`: too many open files in the system")
        }
        _ => format!("cannot start `{program}`: {e}"),
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
    // Both streams are piped, so both are there; were one not, there is nothing to read.
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
