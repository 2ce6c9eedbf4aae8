//! The run cgroups: where the cgroup2 hierarchy is mounted, one cgroup per run below the
//! service's own, kept in a pool when empty so the next run need not make one, and removed at
//! exit (or at the next start after a crash).
//!
//! No crate is used: what is needed is a `mkdir`, a write of a pid into `cgroup.procs`, a read of
//! it, a write to `cgroup.kill` and an `rmdir`; `cgroups-rs` brings v1 code we do not use.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How many empty run cgroups are kept for reuse; past that, an emptied one is removed.
pub const POOL_MAX: usize = 256;

/// Empty run cgroups kept for the next runs, named `cs-run-<service pid>-<n>`.
#[derive(Debug, Default)]
pub struct Pool {
    /// The empty cgroups.
    pub idle: Mutex<Vec<RunCgroup>>,
    made: AtomicU64,
}

/// One run cgroup and its `cgroup.procs`, open for moving processes in.
#[derive(Debug)]
pub struct RunCgroup {
    /// Its directory.
    pub dir: PathBuf,
    /// Its `cgroup.procs`, open for writing.
    pub procs: File,
}

impl RunCgroup {
    /// A new, empty run cgroup below `base`.
    pub fn new(base: &Path, pool: &Pool) -> io::Result<Self> {
        // The service's pid in the name tells whose run it is (see `remove_stale`).
        let n = pool.made.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("cs-run-{}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        let procs = OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .inspect_err(|_| {
                let _ = fs::remove_dir(&dir);
            })?;
        Ok(Self { dir, procs })
    }

    /// Moves process `pid` in; a process that has already exited is no error.
    pub fn move_in(&self, pid: i32) -> io::Result<()> {
        match (&self.procs).write_all(pid.to_string().as_bytes()) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// The processes in it (zombies are not).
    pub fn pids(&self) -> io::Result<Vec<i32>> {
        let text = fs::read_to_string(self.dir.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

/// The mount point of the cgroup2 file system in a `/proc/self/mountinfo` text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Removes empty run cgroups a previous instance left after a crash: those named after a
/// service pid that is no longer running (or is this process, which has started no run yet).
/// The run cgroups of other instances that share the parent cgroup (replicas, tests) are left
/// alone: a run's cgroup is empty for a moment between its creation and its leader moving in,
/// and removing it then made that run fail to start (ENODEV).
pub fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let me = std::process::id().to_string();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix("cs-run-")
            .and_then(|rest| rest.split_once('-'))
            .map(|(pid, _)| pid.to_string())
        else {
            continue;
        };
        let dead = !Path::new("/proc").join(&owner).exists();
        if owner == me || dead {
            let _ = fs::remove_dir(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let text = "24 1 0:22 / /sys rw - sysfs sysfs rw\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("24 1 0:22 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }
}
