//! Every process a run started, wherever it went: the run's own cgroup v2 where the service may
//! create one, and otherwise its marker in the environment (`CS_SESSION_ID=<session>`, which
//! every run's processes inherit) read from `/proc`, with the service a child subreaper so that
//! orphans of a run become the service's children instead of PID 1's.
//!
//! A process that leaves its process group (`setsid`, `nohup … &`, a double fork) stays in its
//! run's cgroup, and keeps its environment. Limits: the marker is lost by a process that clears
//! or replaces its environment (`env -i`), which only the cgroup mechanism catches; a cgroup is
//! only available with cgroup2 mounted and a subtree the service may write (root, or systemd's
//! `Delegate=yes`).
//!
//! No crate is used for the cgroup: what is needed is a `mkdir`, one write of `0` into the new
//! `cgroup.procs` by the child before it executes (see `command::spawn_in`), a read of
//! `cgroup.procs`, a write to `cgroup.kill` and an `rmdir`. `cgroups-rs` moves tasks only after
//! they have started, which races with a child's first fork, and brings v1 code we do not use.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use uuid::Uuid;

use crate::logs::lock;

/// Which mechanism the operator asked for (`--process-tracking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrackingChoice {
    /// A cgroup per run where the service may create one, else the subreaper fallback.
    Auto,
    /// A cgroup per run; the service does not start without one.
    Cgroup,
    /// `PR_SET_CHILD_SUBREAPER` and the per-run environment marker, read from `/proc`.
    Subreaper,
}

/// The mechanism in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// One cgroup v2 per run.
    Cgroup,
    /// Child subreaper plus the environment marker.
    Subreaper,
}

impl Mechanism {
    /// `cgroup` or `subreaper`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cgroup => "cgroup",
            Self::Subreaper => "subreaper",
        }
    }
}

/// Why process tracking could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// No cgroup2 file system in `/proc/self/mountinfo`.
    #[error("no cgroup2 file system is mounted (see /proc/self/mountinfo)")]
    NoCgroup2,
    /// A `/proc` file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The service may not create or fill a cgroup below its own.
    #[error("cannot use a cgroup below {}: {source} (run as root, or under systemd with Delegate=yes)", path.display())]
    NotDelegated {
        /// The service's own cgroup directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(nix::Error),
}

/// The service's process tracking, set up once at startup.
#[derive(Debug)]
pub struct Tracking {
    mechanism: Mechanism,
    /// The service's own cgroup directory (cgroup mechanism only).
    base: PathBuf,
    /// Why `auto` fell back to the subreaper.
    fallback: Option<String>,
}

/// Leaders of runs (tokio waits for them), so the orphan reaper never reaps one. Spawns hold the
/// read side while they start a child and record it; the reaper holds the write side.
static SPAWNING: RwLock<()> = RwLock::new(());
static LEADERS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

impl Tracking {
    /// Sets up the mechanism `choice` names; `auto` takes a cgroup if it can.
    pub fn setup(choice: TrackingChoice) -> Result<Self, TrackingError> {
        match choice {
            TrackingChoice::Cgroup => Self::cgroup(),
            TrackingChoice::Subreaper => Self::subreaper(None),
            TrackingChoice::Auto => {
                Self::cgroup().or_else(|e| Self::subreaper(Some(e.to_string())))
            }
        }
    }

    fn cgroup() -> Result<Self, TrackingError> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let mount = cgroup2_mount(&mountinfo).ok_or(TrackingError::NoCgroup2)?;
        let own = read("/proc/self/cgroup")?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or(TrackingError::NoCgroup2)?;
        let base = mount.join(own.trim().trim_start_matches('/'));
        // Probe: a cgroup can be made, opened for moving a process in, and removed.
        let probe = base.join(format!("cs-probe-{}", std::process::id()));
        let made = fs::create_dir(&probe).and_then(|()| {
            OpenOptions::new()
                .write(true)
                .open(probe.join("cgroup.procs"))
        });
        let _ = fs::remove_dir(&probe);
        made.map_err(|source| TrackingError::NotDelegated {
            path: base.clone(),
            source,
        })?;
        remove_stale(&base);
        Ok(Self {
            mechanism: Mechanism::Cgroup,
            base,
            fallback: None,
        })
    }

    fn subreaper(fallback: Option<String>) -> Result<Self, TrackingError> {
        nix::sys::prctl::set_child_subreaper(true).map_err(TrackingError::Subreaper)?;
        Ok(Self {
            mechanism: Mechanism::Subreaper,
            base: PathBuf::new(),
            fallback,
        })
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// One line for the log: the mechanism, where, and why `auto` fell back.
    pub fn describe(&self) -> String {
        match (&self.mechanism, &self.fallback) {
            (Mechanism::Cgroup, _) => format!("cgroup per run below {}", self.base.display()),
            (Mechanism::Subreaper, None) => "subreaper with a per-run environment marker".into(),
            (Mechanism::Subreaper, Some(why)) => {
                format!("subreaper with a per-run environment marker (no cgroup: {why})")
            }
        }
    }

    /// Prepares the tracking of run `session` before its leader is started.
    pub fn start_run(&self, session: Uuid) -> io::Result<RunProcs> {
        let kind = match self.mechanism {
            Mechanism::Cgroup => {
                // The service's pid in the name tells whose run it is (see `remove_stale`).
                let dir = self
                    .base
                    .join(format!("cs-run-{}-{session}", std::process::id()));
                fs::create_dir(&dir)?;
                Kind::Cgroup {
                    dir,
                    base: self.base.clone(),
                }
            }
            Mechanism::Subreaper => Kind::Marker {
                needle: format!("CS_SESSION_ID={session}\0").into_bytes(),
            },
        };
        Ok(RunProcs { kind })
    }
}

/// The processes of one run.
#[derive(Debug)]
pub struct RunProcs {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Cgroup { dir: PathBuf, base: PathBuf },
    Marker { needle: Vec<u8> },
}

impl RunProcs {
    /// The run's `cgroup.procs`, opened for the leader to move itself in before it executes.
    pub fn procs_file(&self) -> io::Result<Option<File>> {
        match &self.kind {
            Kind::Cgroup { dir, .. } => OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map(Some),
            Kind::Marker { .. } => Ok(None),
        }
    }

    /// Holds off the orphan reaper while a leader is started; call [`Self::leader_started`]
    /// before dropping it.
    pub fn spawning(&self) -> RwLockReadGuard<'static, ()> {
        SPAWNING
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a leader tokio waits for (subreaper mechanism), until [`Self::leader_reaped`].
    pub fn leader_started(&self, pid: i32) {
        if matches!(self.kind, Kind::Marker { .. }) {
            lock(&LEADERS).get_or_insert_with(HashSet::new).insert(pid);
        }
    }

    /// Forgets a leader once tokio has reaped it.
    pub fn leader_reaped(&self, pid: i32) {
        if matches!(self.kind, Kind::Marker { .. }) {
            if let Some(set) = lock(&LEADERS).as_mut() {
                set.remove(&pid);
            }
        }
    }

    /// The run's processes that still run (zombies excluded).
    pub fn pids(&self) -> Vec<i32> {
        match &self.kind {
            Kind::Cgroup { dir, .. } => fs::read_to_string(dir.join("cgroup.procs"))
                .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
                .unwrap_or_default(),
            Kind::Marker { needle } => marked(needle),
        }
    }

    /// Sends `signal` to every process of the run; SIGKILL to a cgroup goes through
    /// `cgroup.kill`, which reaches processes forked while it is delivered too.
    pub fn signal(&self, signal: Signal) {
        if let (Kind::Cgroup { dir, .. }, Signal::SIGKILL) = (&self.kind, signal) {
            if OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.kill"))
                .and_then(|mut f| f.write_all(b"1"))
                .is_ok()
            {
                return;
            }
        }
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Lets what is left of the run go on by itself (`detach_children`): its processes move
    /// out of the run's cgroup into the service's own, so the cgroup can be removed.
    pub fn release(&self) -> usize {
        let Kind::Cgroup { base, .. } = &self.kind else {
            return self.pids().len();
        };
        let pids = self.pids();
        if let Ok(mut procs) = OpenOptions::new()
            .write(true)
            .open(base.join("cgroup.procs"))
        {
            for pid in &pids {
                let _ = procs.write_all(pid.to_string().as_bytes());
            }
        }
        pids.len()
    }

    /// Reaps orphans that were reparented to the service (subreaper mechanism) and have exited,
    /// so they do not stay zombies; never a run's leader, which tokio waits for.
    pub fn reap_orphans(&self) {
        if !matches!(self.kind, Kind::Marker { .. }) {
            return;
        }
        let _no_spawn = SPAWNING
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let leaders = lock(&LEADERS).clone().unwrap_or_default();
        for pid in own_zombie_children() {
            if !leaders.contains(&pid) {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

impl Drop for RunProcs {
    fn drop(&mut self) {
        if let Kind::Cgroup { dir, .. } = &self.kind {
            // Still populated only if something survived SIGKILL; then it is left, and logged.
            if let Err(e) = fs::remove_dir(dir) {
                tracing::warn!(error = %e, cgroup = %dir.display(), "cannot remove a run's cgroup");
            }
        }
    }
}

fn read(path: &'static str) -> Result<String, TrackingError> {
    fs::read_to_string(path).map_err(|source| TrackingError::Read { path, source })
}

/// The mount point of the cgroup2 file system in a `/proc/self/mountinfo` text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
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
fn remove_stale(base: &Path) {
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

/// Every process (not a zombie: its environment reads empty) whose environment holds `needle`.
fn marked(needle: &[u8]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let finder = memchr::memmem::Finder::new(needle);
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| finder.find_iter(&env).any(|at| at == 0 || env[at - 1] == 0))
        })
        .collect()
}

/// The service's children that are zombies, from `/proc/<pid>/stat`.
fn own_zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok()?.stat().ok())
        .filter(|s| s.ppid == me && s.state == 'Z')
        .map(|s| s.pid)
        .collect()
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
