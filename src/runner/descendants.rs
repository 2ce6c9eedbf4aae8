//! A process's descendants and the service's orphans, read from `/proc` through the `procfs`
//! crate, and the run marker (`CS_SESSION_ID=<session>`) in their environment: what
//! [`tracking`](super::tracking) uses to find every process of a run.
//!
//! A process that exits while it is read is simply not there any more. Any other failure to read
//! `/proc` is an error for the caller to act on, never an empty answer: an empty answer would
//! take a run for ended while its processes go on.

use std::fs;
use std::io;

/// Whether a failed read of `/proc/<pid>/…` only means the process has exited.
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH)
}

/// A `procfs` failure as an I/O error; a process that has exited reads as `NotFound`.
fn proc_error(e: procfs::ProcError) -> io::Error {
    match e {
        procfs::ProcError::NotFound(_) => io::Error::from(io::ErrorKind::NotFound),
        procfs::ProcError::Io(e, _) => e,
        other => io::Error::other(other),
    }
}

/// The children of the service's main thread: the orphans reparented to the service (the kernel
/// gives them to the first live thread of a subreaper, the main one, which starts no run), and
/// any leader the main thread started.
pub fn orphans() -> io::Result<Vec<i32>> {
    let me = std::process::id();
    let text = fs::read_to_string(format!("/proc/{me}/task/{me}/children"))?;
    Ok(text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// The children of process `pid`, of all its threads; none once it has exited.
pub fn children(pid: i32) -> io::Result<Vec<i32>> {
    let tasks = match procfs::process::Process::new(pid).and_then(|p| p.tasks()) {
        Ok(tasks) => tasks,
        Err(e) => return none_if_gone(proc_error(e)),
    };
    let mut found = Vec::new();
    for task in tasks {
        // A thread that ends while the list is read has no children to give.
        let Ok(task) = task else { continue };
        match task.children() {
            Ok(c) => found.extend(c.into_iter().filter_map(|c| i32::try_from(c).ok())),
            Err(e) => none_if_gone::<()>(proc_error(e))?,
        }
    }
    Ok(found)
}

fn none_if_gone<T: Default>(e: io::Error) -> io::Result<T> {
    if gone(&e) {
        Ok(T::default())
    } else {
        Err(e)
    }
}

/// Whose run an environment names: `Some(true)` the run of `needle`, `Some(false)` another run.
pub fn marker(env: &[u8], needle: &memchr::memmem::Finder<'_>) -> Option<bool> {
    let at_start = |at: usize| at == 0 || env[at - 1] == 0;
    if needle.find_iter(env).any(at_start) {
        Some(true)
    } else if memchr::memmem::find_iter(env, b"CS_SESSION_ID=").any(at_start) {
        Some(false)
    } else {
        None
    }
}

/// The processes of the run whose environment marker is `needle` (zombies excluded): below the
/// service (a subreaper, so orphans of a run are its children too), every process whose
/// environment holds the marker, and everything below one. The processes of other runs are not
/// descended into, so a check reads about one environment per run going on, not all of `/proc`.
pub fn marked(needle: &[u8]) -> io::Result<Vec<i32>> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = Vec::new();
    let me = std::process::id() as i32;
    let mut stack: Vec<(i32, bool)> = children(me)?.into_iter().map(|c| (c, false)).collect();
    while let Some((pid, below_ours)) = stack.pop() {
        // A zombie's environment reads empty, as does one cleared with `env -i`.
        let env = match fs::read(format!("/proc/{pid}/environ")) {
            Ok(env) => env,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        let ours = match marker(&env, &finder) {
            Some(true) => true,
            Some(false) if !below_ours => continue,
            _ => below_ours,
        };
        if ours && (!env.is_empty() || !is_zombie(pid)?) {
            found.push(pid);
        }
        stack.extend(children(pid)?.into_iter().map(|c| (c, ours)));
    }
    Ok(found)
}

/// Whether `pid` is a zombie (or has exited since).
fn is_zombie(pid: i32) -> io::Result<bool> {
    match procfs::process::Process::new(pid).and_then(|p| p.stat()) {
        Ok(stat) => Ok(matches!(stat.state, 'Z' | 'X' | 'x')),
        Err(e) => match proc_error(e) {
            e if gone(&e) => Ok(true),
            e => Err(e),
        },
    }
}
