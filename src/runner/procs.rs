//! The processes of one run, wherever they went: in its cgroup (moved in at its start, with
//! what the leader forked meanwhile), or marked by `CS_SESSION_ID=<session>` below the service;
//! how they are listed, signalled, let go, and their orphans reaped.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::cgroup::{Pool, RunCgroup, POOL_MAX};
use super::descendants::{children, marked, marker, orphans};
use crate::logs::lock;

/// Leaders of runs (tokio waits for them), so the orphan reaper never reaps one. Spawns hold the
/// read side while they start a child and record it; the reaper holds the write side.
static SPAWNING: RwLock<()> = RwLock::new(());
static LEADERS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// The processes of one run.
#[derive(Debug)]
pub struct RunProcs {
    pub(super) kind: Kind,
    /// `CS_SESSION_ID=<session>\0`, the run's marker in its processes' environment.
    pub(super) needle: Vec<u8>,
}

#[derive(Debug)]
pub(super) enum Kind {
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
                    stack.extend(children(pid)?);
                }
            }
            stack.extend(orphans()?.into_iter().filter(|&pid| {
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

    /// The run's processes that still run (zombies excluded). An error means they could not be
    /// read: the caller must not take the run for ended.
    pub fn pids(&self) -> io::Result<Vec<i32>> {
        match &self.kind {
            Kind::Cgroup { cgroup, .. } => cgroup.as_ref().map_or(Ok(Vec::new()), RunCgroup::pids),
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
        match self.pids() {
            Ok(pids) => {
                for pid in pids {
                    let _ = kill(Pid::from_raw(pid), signal);
                }
            }
            // The process group is signalled all the same (see `Group`), and the run goes on
            // being counted as alive until it can be read again or SIGKILL has had its time.
            Err(e) => tracing::warn!(error = %e, "cannot list a run's processes to send {signal}"),
        }
    }

    /// Lets what is left of the run go on by itself (`detach_children`): its processes move
    /// out of the run's cgroup into the service's own, so the cgroup can be removed. A process
    /// that cannot be moved keeps the cgroup, which is then left in place (see `Drop`).
    pub fn release(&self) -> io::Result<usize> {
        let pids = self.pids()?;
        let Kind::Cgroup { base, .. } = &self.kind else {
            return Ok(pids.len());
        };
        let mut procs = OpenOptions::new()
            .write(true)
            .open(base.join("cgroup.procs"))?;
        for pid in &pids {
            match procs.write_all(pid.to_string().as_bytes()) {
                Err(e) if e.raw_os_error() != Some(nix::libc::ESRCH) => return Err(e),
                _ => {}
            }
        }
        Ok(pids.len())
    }

    /// Reaps orphans that were reparented to the service (subreaper mechanism) and have exited,
    /// so they do not stay zombies; never a run's leader, which tokio waits for.
    pub fn reap_orphans(&self) {
        let found = match orphans() {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the service's children; orphans are reaped at the next run's end");
                return;
            }
        };
        // Most often there is none: nothing to reap, no lock.
        if found.into_iter().all(is_leader) {
            return;
        }
        // No leader is being started now, so every leader is in LEADERS; a child still running
        // is not reaped by a WNOHANG wait.
        let _no_spawn = SPAWNING
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for pid in orphans().unwrap_or_default() {
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
        // Still populated only if something survived SIGKILL; then it is left, and logged. One
        // that cannot be read is not known to be empty, and is left too.
        match cgroup.pids() {
            Ok(pids) if pids.is_empty() => {}
            Ok(_) => {
                tracing::warn!(cgroup = %cgroup.dir.display(), "a run's cgroup is not empty; left in place");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, cgroup = %cgroup.dir.display(), "cannot read a run's cgroup; left in place");
                return;
            }
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

fn is_leader(pid: i32) -> bool {
    lock(&LEADERS).as_ref().is_some_and(|l| l.contains(&pid))
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    #[test]
    fn an_unreadable_cgroup_is_never_taken_for_empty() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(Pool::default());
        let procs = RunProcs {
            kind: Kind::Cgroup {
                cgroup: Some(RunCgroup {
                    dir: dir.path().join("removed-under-the-service"),
                    procs: File::create(dir.path().join("procs")).unwrap(),
                }),
                base: dir.path().to_path_buf(),
                pool: pool.clone(),
            },
            needle: b"CS_SESSION_ID=x\0".to_vec(),
        };
        assert!(
            procs.pids().is_err(),
            "a failed read must not read as no process"
        );
        assert!(procs.release().is_err());
        drop(procs);
        assert!(
            lock(&pool.idle).is_empty(),
            "a cgroup that could not be read went back to the pool as empty"
        );
    }
}
