//! One child process from spawn to reaping: its own process group, both output streams read
//! concurrently into the task log, and SIGTERM, a grace period, then SIGKILL on cancellation.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::spawn;
use crate::logs::{lock, Lines, Stream, TaskLog};

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
    pub vars: &'a [(&'static str, &'a str)],
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

/// How long a run may go before its exit is watched through a pidfd. Most runs are over before
/// this: their pipes close, and one `waitpid` finds the exit status, which costs less than
/// opening a pidfd and registering it with the runtime for every run (BENCHMARKS.md).
const EXIT_WATCH_AFTER: Duration = Duration::from_millis(50);

/// How often a run's exit is checked where the kernel has no pidfds (before Linux 5.3).
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Runs `program args…` to the end (or until cancelled) and reports how it went.
///
/// The run is over when the process has exited and both pipes are closed (or have stayed open
/// [`PIPE_DRAIN_LIMIT`] past the exit).
pub async fn run(program: &OsStr, args: &[OsString], env: RunEnv<'_>) -> Outcome {
    let mut outcome = Outcome::default();
    let Spawned {
        mut child,
        stdout,
        stderr,
    } = match spawn(program, args, env.vars) {
        Ok(spawned) => spawned,
        Err(e) => {
            let text = format!("cannot start `{}`: {e}", program.to_string_lossy());
            env.log.event(env.session, &text);
            outcome.spawn_error = Some(text);
            return outcome;
        }
    };

    let mut out_last = Vec::new();
    let mut err_last = Vec::new();
    let mut status: Option<Exit> = None;
    {
        let reading = async {
            tokio::join!(
                pump(stdout, Stream::Stdout, &env, &mut out_last),
                pump(stderr, Stream::Stderr, &env, &mut err_last)
            )
        };
        let watch_after = tokio::time::sleep(EXIT_WATCH_AFTER);
        tokio::pin!(reading, watch_after);
        let mut read_done = false;
        let mut watch: Option<ExitWatch> = None;
        let mut kill_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = &mut reading, if !read_done => {
                    read_done = true;
                    if status.is_none() {
                        status = child.try_reap();
                    }
                    if status.is_some() { break; }
                    // The pipes closed before the process exited: wait for its exit.
                    watch.get_or_insert_with(|| ExitWatch::new(child.pid));
                }
                () = &mut watch_after, if watch.is_none() && status.is_none() => {
                    watch = Some(ExitWatch::new(child.pid));
                }
                () = ExitWatch::changed(&mut watch), if status.is_none() => {
                    status = child.try_reap();
                    if status.is_some() {
                        if read_done { break; }
                        drain_until = Some(Instant::now() + PIPE_DRAIN_LIMIT);
                    }
                }
                _ = env.cancel.cancelled(), if !outcome.cancelled && status.is_none() => {
                    outcome.cancelled = true;
                    signal_group(child.pid, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + env.grace);
                    watch.get_or_insert_with(|| ExitWatch::new(child.pid));
                }
                _ = sleep_until_opt(kill_at), if status.is_none() => {
                    signal_group(child.pid, Signal::SIGKILL);
                    kill_at = None;
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
        Some(Exit::Code(code)) => outcome.exit_code = Some(code),
        Some(Exit::Signal(sig)) => outcome.signal = Some(sig),
        Some(Exit::Lost(e)) => {
            outcome.spawn_error = Some(format!("cannot wait for the process: {e}"));
        }
        None => outcome.spawn_error = Some("the process was not waited for".into()),
    }
    outcome
}

/// A started child and the parent's ends of its output pipes.
struct Spawned {
    child: Child,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}

/// Starts `program args…` in a process group of its own, with stdin from `/dev/null`, stdout and
/// stderr into fresh pipes, and the service's environment plus `vars`.
///
/// This is our own vfork-and-exec ([`spawn`](super::spawn)) rather than `std::process`,
/// because std rebuilds the whole environment for every spawn once a variable is added (a tenth
/// of the service's CPU per call in the profile), tokio's child adds a pidfd and its
/// registration per run, and glibc's `posix_spawn` under both maps and unmaps a child stack
/// every time. Like std, the child gets an empty signal mask and SIGPIPE back at its default
/// (Rust ignores it in the service), and a program without a `/` is looked up in `PATH`.
fn spawn(program: &OsStr, args: &[OsString], vars: &[(&'static str, &str)]) -> io::Result<Spawned> {
    let nul = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    };
    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(CString::new(program.as_bytes()).map_err(|_| nul("the program name".into()))?);
    for (i, arg) in args.iter().enumerate() {
        argv.push(CString::new(arg.as_bytes()).map_err(|_| nul(format!("argument {}", i + 1)))?);
    }
    let extra = vars
        .iter()
        .map(|(k, v)| {
            // Room for the NUL too, so CString::new does not grow it again.
            let mut entry = Vec::with_capacity(k.len() + v.len() + 2);
            entry.extend_from_slice(k.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            CString::new(entry).map_err(|_| nul(format!("variable {k}")))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let inherited = inherited_env(vars);

    let argv_ptrs = spawn::nul_terminated(argv.iter().map(CString::as_c_str));
    let envp = spawn::nul_terminated(
        inherited
            .iter()
            .copied()
            .chain(extra.iter().map(CString::as_c_str)),
    );

    let (out_read, out_write) = output_pipe()?;
    let (err_read, err_write) = output_pipe()?;
    let null = dev_null()?;
    let pid = spawn::spawn(&spawn::Plan {
        program: &argv[0],
        argv: &argv_ptrs,
        envp: &envp,
        stdio: [
            null.as_raw_fd(),
            out_write.as_raw_fd(),
            err_write.as_raw_fd(),
        ],
    })?;
    // From here on the child runs: if anything below fails, dropping `child` kills and reaps it.
    let child = Child { pid, reaped: false };
    drop((out_write, err_write));
    Ok(Spawned {
        stdout: pipe::Receiver::from_owned_fd_unchecked(out_read)?,
        stderr: pipe::Receiver::from_owned_fd_unchecked(err_read)?,
        child,
    })
}

/// Blocks SIGCHLD in the calling thread, and so in every thread it starts afterwards; call it
/// first thing in `main`, before any thread exists.
///
/// Runs are reaped with `waitpid` and pidfds, so nothing here wants SIGCHLD, and with its default
/// disposition the kernel drops it, unless the thread that started the child has it blocked at
/// that moment: `spawn` blocks every signal while it starts a child (as glibc's `posix_spawn`
/// does), and a child that exits during another spawn on the same worker then had its SIGCHLD
/// delivered to some idle thread instead (the config watcher's, the accept loop's), waking it for
/// nothing. Under load that was about one wake-up per call (BENCHMARKS.md, step 12). Blocked
/// everywhere, it stays pending and no thread is woken. Children are unaffected: `spawn` gives
/// them an empty signal mask, and pending signals are never inherited.
pub fn hold_child_exits() -> io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(())
}

/// Whether the `NAME=value` entry `entry` sets `name`.
fn names_var(entry: &CStr, name: &str) -> bool {
    let entry = entry.to_bytes();
    entry.len() > name.len() && entry.starts_with(name.as_bytes()) && entry[name.len()] == b'='
}

/// The service's environment without the variables named in `vars`, which the run sets itself.
///
/// Every run sets the same names, so the filtered list is computed once per set of names and
/// kept, instead of filtering the whole environment on every spawn (about 4% of the service's
/// own instructions per call, BENCHMARKS.md step 14). The names are literals in the code, so
/// the sets are few and keeping each one for good is bounded.
fn inherited_env(vars: &[(&'static str, &str)]) -> &'static [&'static CStr] {
    type Filtered = (Vec<&'static str>, &'static [&'static CStr]);
    static BY_NAMES: Mutex<Vec<Filtered>> = Mutex::new(Vec::new());
    let names = || vars.iter().map(|(k, _)| *k);
    let mut known = lock(&BY_NAMES);
    if let Some((_, env)) = known
        .iter()
        .find(|(set, _)| set.iter().copied().eq(names()))
    {
        return env;
    }
    let env: Vec<&'static CStr> = base_env()
        .iter()
        .filter(|e| !names().any(|k| names_var(e, k)))
        .map(CString::as_c_str)
        .collect();
    let env: &'static [&'static CStr] = Box::leak(env.into_boxed_slice());
    known.push((names().collect(), env));
    env
}

/// The service's environment as `NAME=value` strings, read once: the service never changes its
/// own environment, so every child gets the one it started with.
fn base_env() -> &'static [CString] {
    static ENV: OnceLock<Vec<CString>> = OnceLock::new();
    ENV.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(name, value)| {
                let mut entry = name.into_vec();
                entry.push(b'=');
                entry.extend(value.into_vec());
                CString::new(entry).ok()
            })
            .collect()
    })
}

/// A pipe for one output stream: the parent's read end non-blocking for the runtime, the
/// child's write end blocking (programs do not expect `EAGAIN` on stdout), both close-on-exec
/// (the child gets its end through dup2, which clears the flag on the copy).
fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((read, write))
}

/// The stdin of every child: `/dev/null`, opened once, which costs less than walking the path
/// again for every run (the benchmark showed the `open` in the profile).
fn dev_null() -> io::Result<&'static File> {
    static DEV_NULL: OnceLock<Option<File>> = OnceLock::new();
    DEV_NULL
        .get_or_init(|| File::open("/dev/null").ok())
        .as_ref()
        .ok_or_else(|| io::Error::other("cannot open /dev/null"))
}

/// How a reaped child ended.
enum Exit {
    Code(i32),
    Signal(i32),
    /// `waitpid` failed: the exit status is lost.
    Lost(Errno),
}

/// A spawned child, the leader of its own process group (its pid is the group id).
struct Child {
    pid: Pid,
    reaped: bool,
}

impl Child {
    /// Reaps the child if it has exited.
    fn try_reap(&mut self) -> Option<Exit> {
        let exit = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Exit::Signal(sig as i32),
            // Still running (stopped and continued children are not reported without
            // WUNTRACED and WCONTINUED).
            Ok(_) => return None,
            Err(Errno::EINTR) => return None,
            Err(e) => Exit::Lost(e),
        };
        self.reaped = true;
        Some(exit)
    }
}

impl Drop for Child {
    /// A run dropped before its child was reaped (its runtime shut down with the run still
    /// going) kills the whole group, which nobody is waiting for any more, and reaps the
    /// leader on a thread of its own so no zombie is left.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        signal_group(self.pid, Signal::SIGKILL);
        let pid = self.pid;
        let reaper = std::thread::Builder::new()
            .name("cs-reaper".into())
            .spawn(move || {
                let _ = waitpid(pid, None);
            });
        if let Err(e) = reaper {
            tracing::warn!(error = %e, pid = pid.as_raw(), "cannot reap a killed child");
        }
    }
}

/// Tells when a child may have exited: readiness of its pidfd, or a timer where the kernel has
/// no pidfds.
enum ExitWatch {
    Pidfd(AsyncFd<OwnedFd>),
    Poll(tokio::time::Interval),
}

impl ExitWatch {
    fn new(pid: Pid) -> Self {
        let registered = pidfd_open(pid).ok().and_then(|fd| {
            // SAFETY: the AsyncFd owns `fd`, an open pidfd, for its whole life, so the
            // descriptor it registered stays open and the same until it is dropped.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
        });
        registered.map_or_else(Self::polling, Self::Pidfd)
    }

    /// The fallback where no pidfd can be had or watched.
    fn polling() -> Self {
        Self::Poll(tokio::time::interval(EXIT_POLL))
    }

    /// Resolves when the child may have exited; never, while there is no watch.
    async fn changed(watch: &mut Option<Self>) {
        match watch {
            // Readiness is kept: once the child has exited it stays readable.
            Some(Self::Pidfd(fd)) => {
                if let Err(e) = fd.readable().await {
                    tracing::warn!(error = %e, "cannot watch a child's pidfd; polling instead");
                    *watch = Some(Self::polling());
                }
            }
            Some(Self::Poll(tick)) => {
                tick.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// A pidfd for `pid` (Linux 5.3 and later; nix has no wrapper for it).
fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1; the
    // descriptor is owned by nobody else.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: `fd` was just returned by the kernel and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal_group(pgid: Pid, signal: Signal) {
    // ESRCH only means the group is already gone, which is what we want.
    let _ = killpg(pgid, signal);
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads one stream to its end, logging every line and keeping the last non-empty one in `last`.
async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: Stream,
    env: &RunEnv<'_>,
    last: &mut Vec<u8>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_environment_leaves_out_the_runs_own_names_and_is_computed_once() {
        let names_path = |env: &[&CStr]| env.iter().filter(|e| names_var(e, "PATH")).count();
        assert_eq!(
            names_path(&base_env().iter().map(CString::as_c_str).collect::<Vec<_>>()),
            1
        );
        let without = inherited_env(&[("PATH", "/run/own")]);
        assert_eq!(names_path(without), 0);
        assert_eq!(without.len(), base_env().len() - 1);
        // The same names, whatever their values, get the very same list.
        assert!(std::ptr::eq(without, inherited_env(&[("PATH", "other")])));
        assert_eq!(inherited_env(&[]).len(), base_env().len());
    }
}
