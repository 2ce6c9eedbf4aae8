//! A process's descendants and the service's orphans, read from `/proc` through the `procfs`
//! crate, and the run marker (`CS_SESSION_ID=<session>`) in their environment: what
//! [`tracking`](super::tracking) uses to find every process of a run.

use std::fs;

/// The children of the service's main thread: the orphans reparented to the service (the kernel
/// gives them to the first live thread of a subreaper, the main one, which starts no run), and
/// any leader the main thread started.
pub fn orphans() -> Vec<i32> {
    let me = std::process::id();
    fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The children of process `pid`, of all its threads.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = procfs::process::Process::new(pid).and_then(|p| p.tasks()) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| t.children().ok())
        .flatten()
        .filter_map(|c| i32::try_from(c).ok())
        .collect()
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
pub fn marked(needle: &[u8]) -> Vec<i32> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = Vec::new();
    let me = std::process::id() as i32;
    let mut stack: Vec<(i32, bool)> = children(me).into_iter().map(|c| (c, false)).collect();
    while let Some((pid, below_ours)) = stack.pop() {
        // A zombie's environment reads empty, as does one cleared with `env -i`.
        let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let ours = match marker(&env, &finder) {
            Some(true) => true,
            Some(false) if !below_ours => continue,
            _ => below_ours,
        };
        if ours && (!env.is_empty() || !is_zombie(pid)) {
            found.push(pid);
        }
        stack.extend(children(pid).into_iter().map(|c| (c, ours)));
    }
    found
}

fn is_zombie(pid: i32) -> bool {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_or(true, |s| matches!(s.state, 'Z' | 'X' | 'x'))
}
