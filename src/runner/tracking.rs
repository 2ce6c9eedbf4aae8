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
//! No crate is used for the cgroup: what is needed is a `mkdir`, a write of the leader's pid into
//! `cgroup.procs`, a read of it, a write to `cgroup.kill` and an `rmdir`; `cgroups-rs` brings v1
//! code we do not use. The leader is started the standard way (glibc's `posix_spawn`, see
//! [`command`](super::command)) and moved in by the service right after: a child that moved
//! itself in before it executed needed a `pre_exec` hook, which makes std `fork` the whole
//! service and cost about 1.8 ms per run (BENCHMARKS.md). What the leader forks in the moment
//! between its start and the move is found among its children and moved too ([`RunProcs::adopt`]).
//! Empty run cgroups are kept for the next runs instead of being removed and made again, which
//! costs about 55 µs of kernel time per run.
//!
//! Descendants are listed through the `procfs` crate (`/proc/<pid>/task/<tid>/children`).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use uuid::Uuid;

use super::descendants::{children, marked, marker, orphans};
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
    /// Empty run cgroups ready for the next runs (cgroup mechanism only).
    pool: Arc<Pool>,
}

/// How many empty run cgroups are kept for reuse; past that, an emptied one is removed.
const POOL_MAX: usize = 256;

/// Empty run cgroups kept for the next runs, named `cs-run-<service pid>-<n>`.
#[derive(Debug, Default)]
struct Pool {
    idle: Mutex<Vec<RunCgroup>>,
    made: AtomicU64,
}

/// One run cgroup and its `cgroup.procs`, open for moving processes in.
#[derive(Debug)]
struct RunCgroup {
    dir: PathBuf,
    procs: File,
}

impl RunCgroup {
    /// Moves process `pid` in; a process that has already exited is no error.
    fn move_in(&self, pid: i32) -> io::Result<()> {
        match (&self.procs).write_all(pid.to_string().as_bytes()) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// The processes in it (zombies are not).
    fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
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
        // A subreaper here too: what a leader orphans in the moment before it is moved into its
        // cgroup comes to the service, where `adopt` finds it (see there).
        nix::sys::prctl::set_child_subreaper(true).map_err(TrackingError::Subreaper)?;
        Ok(Self {
            mechanism: Mechanism::Cgroup,
            base,
            fallback: None,
            pool: Arc::default(),
        })
    }

    fn subreaper(fallback: Option<String>) -> Result<Self, TrackingError> {
        nix::sys::prctl::set_child_subreaper(true).map_err(TrackingError::Subreaper)?;
        Ok(Self {
            mechanism: Mechanism::Subreaper,
            base: PathBuf::new(),
            fallback,
            pool: Arc::default(),
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

    /// Prepares the tracking of run `session` before its leader is started: an empty cgroup
    /// from the pool, or a new one.
    pub fn start_run(&self, session: Uuid) -> io::Result<RunProcs> {
        let kind = match self.mechanism {
            Mechanism::Cgroup => {
                let pooled = lock(&self.pool.idle).pop();
                let cgroup = match pooled {
                    Some(cgroup) => cgroup,
                    None => self.new_cgroup()?,
                };
                Kind::Cgroup {
                    cgroup: Some(cgroup),
                    base: self.base.clone(),
                    pool: Arc::clone(&self.pool),
                }
            }
            Mechanism::Subreaper => Kind::Marker,
        };
        Ok(RunProcs {
            kind,
            needle: format!("CS_SESSION_ID={session}\0").into_bytes(),
        })
    }

    fn new_cgroup(&self) -> io::Result<RunCgroup> {
        // The service's pid in the name tells whose run it is (see `remove_stale`).
        let n = self.pool.made.fetch_add(1, Ordering::Relaxed);
        let dir = self.base.join(format!("cs-run-{}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        let procs = OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .inspect_err(|_| {
                let _ = fs::remove_dir(&dir);
            })?;
        Ok(RunCgroup { dir, procs })
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        for cgroup in lock(&self.pool.idle).drain(..) {
            let _ = fs::remove_dir(&cgroup.dir);
        }
    }
}

/// The processes of one run.
#[derive(Debug)]
pub struct RunProcs {
    kind: Kind,
    /// `CS_SESSION_ID=<session>\0`, the run's marker in its processes' environment.
    needle: Vec<u8>,
}

#[derive(Debug)]
enum Kind {
    Cgroup {
        /// Taken back into the pool when the run is dropped.
        cgroup: Option<RunCgroup>,
        base: PathBuf,
        pool: Arc<Pool>,
    },
    Marker,
}

impl RunProcs {
    fn cgroup(&self) -> Option<&RunCgroup> {
        match &self.kind {
            Kind::Cgroup { cgroup, .. } => cgroup.as_ref(),
            Kind::Marker => None,
        }
    }

    /// Moves the run's just-started leader into the run's cgroup (cgroup mechanism), with
    /// whatever it forked before the move. Anything forked after a process is moved lands in
    /// the cgroup by itself, so what is left is what was forked in the moment between the start
    /// and the move: the children of each moved process, read once it is in; and the processes
    /// orphaned meanwhile (their parent exited before its children were read: a double fork,
    /// `setsid … &` in a subshell, or a leader that was already done), which the kernel gives to
    /// the service (a subreaper) and whose environment carries the run's marker. The orphans
    /// are read after each walk, until a read finds none left outside: a parent that exits
    /// while it is walked hands its children to the service before that read.
    pub fn adopt(&self, leader: i32) -> io::Result<()> {
        let Some(cgroup) = self.cgroup() else {
            return Ok(());
        };
        let finder = memchr::memmem::Finder::new(&self.needle);
        let mut moved = HashSet::new();
        let mut stack = vec![leader];
        while !stack.is_empty() {
            while let Some(pid) = stack.pop() {
                if moved.insert(pid) {
                    cgroup.move_in(pid)?;
                    stack.extend(children(pid));
                }
            }
            stack.extend(orphans().into_iter().filter(|&pid| {
                !moved.contains(&pid)
                    && !is_leader(pid)
                    && fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| marker(&env, &finder) == Some(true))
            }));
        }
        Ok(())
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
        lock(&LEADERS).get_or_insert_with(HashSet::new).insert(pid);
    }

    /// Forgets a leader once tokio has reaped it.
    pub fn leader_reaped(&self, pid: i32) {
        if let Some(set) = lock(&LEADERS).as_mut() {
            set.remove(&pid);
        }
    }

    /// The run's processes that still run (zombies excluded).
    pub fn pids(&self) -> Vec<i32> {
        match &self.kind {
            Kind::Cgroup { cgroup, .. } => cgroup.as_ref().map(RunCgroup::pids).unwrap_or_default(),
            Kind::Marker => marked(&self.needle),
        }
    }

    /// Sends `signal` to every process of the run; SIGKILL to a cgroup goes through
    /// `cgroup.kill`, which reaches processes forked while it is delivered too.
    pub fn signal(&self, signal: Signal) {
        if let (Some(cgroup), Signal::SIGKILL) = (self.cgroup(), signal) {
            if OpenOptions::new()
                .write(true)
                .open(cgroup.dir.join("cgroup.kill"))
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
        // Most often there is none: nothing to reap, no lock.
        if orphans().into_iter().all(is_leader) {
            return;
        }
        // No leader is being started now, so every leader is in LEADERS; a child still running
        // is not reaped by a WNOHANG wait.
        let _no_spawn = SPAWNING
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for pid in orphans() {
            if !is_leader(pid) {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

impl Drop for RunProcs {
    fn drop(&mut self) {
        let Kind::Cgroup { cgroup, pool, .. } = &mut self.kind else {
            return;
        };
        let Some(cgroup) = cgroup.take() else { return };
        // Still populated only if something survived SIGKILL; then it is left, and logged.
        if !cgroup.pids().is_empty() {
            tracing::warn!(cgroup = %cgroup.dir.display(), "a run's cgroup is not empty; left in place");
            return;
        }
        let mut idle = lock(&pool.idle);
        if idle.len() < POOL_MAX {
            idle.push(cgroup);
            return;
        }
        drop(idle);
        if let Err(e) = fs::remove_dir(&cgroup.dir) {
            tracing::warn!(error = %e, cgroup = %cgroup.dir.display(), "cannot remove a run's cgroup");
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

fn is_leader(pid: i32) -> bool {
    lock(&LEADERS).as_ref().is_some_and(|l| l.contains(&pid))
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
