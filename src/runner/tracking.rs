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
//! The run cgroups themselves (made, pooled, removed) are [`cgroup`](super::cgroup)'s. The leader
//! is started the standard way (glibc's `posix_spawn`, see [`command`](super::command)) and moved
//! in by the service right after: a child that moved itself in before it executed would need a
//! `pre_exec` hook, which makes std `fork` the whole service. What the leader forks in the moment
//! between its start and the move is found among its children and moved too
//! ([`RunProcs::adopt`]).
//!
//! Descendants are listed through the `procfs` crate (`/proc/<pid>/task/<tid>/children`).

use std::fs::{self, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use super::cgroup::{cgroup2_mount, remove_stale, Pool, RunCgroup};
use super::procs::Kind;
pub use super::procs::RunProcs;
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
                    None => RunCgroup::new(&self.base, &self.pool)?,
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
}

impl Drop for Tracking {
    fn drop(&mut self) {
        for cgroup in lock(&self.pool.idle).drain(..) {
            let _ = fs::remove_dir(&cgroup.dir);
        }
    }
}

fn read(path: &'static str) -> Result<String, TrackingError> {
    fs::read_to_string(path).map_err(|source| TrackingError::Read { path, source })
}
