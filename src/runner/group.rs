//! A run's process group, and ending a run: the one way every run is stopped before its time
//! (kill on request, a sync client hanging up, the service shutting down, and timeouts).
//!
//! The group is signalled by its id, recorded right after the spawn, never through the leader:
//! a leader that has exited (and been reaped) leaves behind the rest of its group, which
//! `killpg` still reaches as long as any member lives. Only what the kernel shows counts: the
//! run is reported ended once the leader is reaped and no process of the group runs any more
//! (`/proc`, read through the `procfs` crate).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;
use uuid::Uuid;

use super::tracking::RunProcs;
use crate::logs::TaskLog;

/// How soon the group is first checked after a signal; each later check waits twice as long, up
/// to [`CHECK_MAX`]. Most groups are gone within milliseconds of SIGTERM; a check is a `killpg`
/// probe, and a read of `/proc` only while something of the group is left.
const CHECK_FIRST: Duration = Duration::from_millis(5);
const CHECK_MAX: Duration = Duration::from_millis(200);

/// How long the group may take to vanish after SIGKILL (a process in uninterruptible sleep
/// dies when it wakes) before the run is reported ended anyway, with what was left.
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// The process group a run's leader was started in, and every other process of the run that
/// its tracking ([`RunProcs`]) finds, in the group or not.
pub struct Group {
    pgid: Pid,
    procs: Option<RunProcs>,
    /// Set once the run has ended (by itself, or through [`end_run`]); until then, dropping the
    /// group (the run's future dropped with its runtime) kills all of it.
    settled: bool,
}

impl Group {
    /// The group led by `leader`, a child just started in a group of its own, with the run's
    /// tracking when the service has one.
    pub fn new(leader: Pid, procs: Option<RunProcs>) -> Self {
        Self {
            pgid: leader,
            procs,
            settled: false,
        }
    }

    /// The run's tracking, if it has one.
    pub fn procs(&self) -> Option<&RunProcs> {
        self.procs.as_ref()
    }

    /// The group's id.
    pub fn id(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Says in the task log what of the run still runs after it ended by itself and was let go
    /// (`detach_children`): such a process is no longer tracked.
    pub fn left_running(&self, log: &TaskLog, session: Uuid) {
        let alive = self.alive();
        if alive > 0 {
            log.event(
                session,
                format_args!(
                    "{} of process group {} still running after the run ended; left running (detach_children)",
                    processes(alive),
                    self.id()
                ),
            );
        }
    }

    /// Marks the run ended: dropping the group no longer kills it.
    pub fn settle(&mut self) {
        self.settled = true;
    }

    fn signal(&self, signal: Signal) {
        // ESRCH only means nothing of the group is left, which is what we want.
        let _ = killpg(self.pgid, signal);
        if let Some(procs) = &self.procs {
            procs.signal(signal);
        }
    }

    /// How many processes of the group still run. Zombies do not count: they run nothing, and
    /// one whose parent has died may never be reaped where PID 1 does not reap orphans.
    ///
    /// What cannot be read counts as alive, logged with why: the run is never taken for ended
    /// on a failed read, so it goes on being ended (SIGTERM, then SIGKILL) as if it ran.
    pub fn alive(&self) -> usize {
        let mut alive: Vec<i32> = match self.procs.as_ref().map(RunProcs::pids) {
            None => Vec::new(),
            Some(Ok(pids)) => pids,
            Some(Err(e)) => {
                tracing::warn!(error = %e, pgid = self.id(), "cannot list the run's processes; counting the run as alive");
                return 1;
            }
        };
        // No process of the group left at all, not even a zombie: no need to read /proc.
        if killpg(self.pgid, None) == Err(Errno::ESRCH) {
            return alive.len();
        }
        match members_running(self.pgid.as_raw()) {
            Ok(members) => {
                alive.extend(members);
                alive.sort_unstable();
                alive.dedup();
                alive.len()
            }
            Err(e) => {
                tracing::warn!(error = %e, pgid = self.id(), "cannot read /proc; counting the group as alive");
                alive.len().max(1)
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.settled {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Processes in group `pgid` that are not zombies, from `/proc/<pid>/stat`.
fn members_running(pgid: i32) -> io::Result<Vec<i32>> {
    let all = procfs::process::all_processes().map_err(io::Error::other)?;
    // A process that exits while the list is read is simply not counted.
    Ok(all
        .filter_map(|p| p.ok()?.stat().ok())
        .filter(|s| s.pgrp == pgid && !matches!(s.state, 'Z' | 'X' | 'x'))
        .map(|s| s.pid)
        .collect())
}

/// Waits for the exit of a run's leader; polled again and again until it resolves, and from
/// then on answers at once.
pub struct Leader<'c> {
    wait: Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + 'c>>,
    exit: Option<Result<ExitStatus, String>>,
}

impl<'c> Leader<'c> {
    /// Watches the leader through `wait` (the child's own wait future).
    pub fn new(wait: Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + 'c>>) -> Self {
        Self { wait, exit: None }
    }

    /// Resolves once the leader has been reaped. Cancel-safe: dropped before that, the wait
    /// goes on where it was at the next call.
    pub async fn reaped(&mut self) {
        if self.exit.is_none() {
            let exit = self.wait.as_mut().await;
            self.exit = Some(exit.map_err(|e| e.to_string()));
        }
    }

    /// Whether the leader has been reaped.
    pub fn is_reaped(&self) -> bool {
        self.exit.is_some()
    }

    /// How the leader ended; `None` until it has been reaped.
    pub fn exit(&self) -> Option<&Result<ExitStatus, String>> {
        self.exit.as_ref()
    }
}

/// Ends a run before its time (or what its leader left running when it exited): SIGTERM to its
/// whole process group and every process its tracking finds; at the grace deadline
/// SIGKILL to the group (whether or not the leader is still there) unless the group is gone by
/// then; reaps the leader; and returns only once nothing of the group runs any more (or
/// [`KILL_SETTLE`] after the SIGKILL). Every step is written to the task log.
///
/// Kill requests, client hang-ups, shutdown and timeouts all cancel the run's token, and the
/// run calls this; nothing else signals a run.
pub async fn end_run(
    group: &mut Group,
    leader: &mut Leader<'_>,
    grace: Duration,
    log: &TaskLog,
    session: Uuid,
) {
    let pgid = group.id();
    // Not counted first: at shutdown a thousand runs may be ended at once, and counting reads
    // all of /proc while the group lives.
    group.signal(Signal::SIGTERM);
    log.event(session, format_args!("SIGTERM to process group {pgid}"));
    let gone = |group: &Group, leader: &Leader<'_>| leader.is_reaped() && group.alive() == 0;
    if !settle_within(group, leader, grace, gone).await {
        let alive = group.alive();
        log.event(
            session,
            format_args!(
                "{} still alive after {grace:?} grace; SIGKILL to process group {pgid}",
                processes(alive)
            ),
        );
        group.signal(Signal::SIGKILL);
        leader.reaped().await;
        if !settle_within(group, leader, KILL_SETTLE, gone).await {
            let alive = group.alive();
            log.event(
                session,
                format_args!(
                    "{} of process group {pgid} still alive {KILL_SETTLE:?} after SIGKILL",
                    processes(alive)
                ),
            );
            tracing::warn!(pgid, alive, "processes survived SIGKILL");
            group.settle();
            return;
        }
    }
    log.event(session, format_args!("process group {pgid} gone"));
    group.settle();
}

/// Waits up to `limit` for `done`, checked when the leader is reaped and then at growing
/// intervals; whether it came true.
async fn settle_within(
    group: &Group,
    leader: &mut Leader<'_>,
    limit: Duration,
    done: impl Fn(&Group, &Leader<'_>) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = CHECK_FIRST;
    loop {
        if done(group, leader) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let wake = (now + pause).min(deadline);
        tokio::select! {
            () = leader.reaped(), if !leader.is_reaped() => {}
            () = tokio::time::sleep_until(wake) => pause = (pause * 2).min(CHECK_MAX),
        }
    }
}

/// "1 process", "2 processes".
fn processes(n: usize) -> String {
    if n == 1 {
        "1 process".to_string()
    } else {
        format!("{n} processes")
    }
}
