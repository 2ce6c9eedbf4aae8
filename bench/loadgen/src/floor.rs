//! One run of the floor's command, started exactly the way the service starts its children: the
//! service's own spawner (src/runner/spawn.rs, compiled in here), stdin from `/dev/null`, stdout and
//! stderr into pipes read to the end, and the child reaped. Only the service's own work around it
//! (HTTP, logs, the runtime) is left out, which is what the ratio to the floor measures.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use nix::libc::c_char;

#[path = "../../../src/runner/spawn.rs"]
mod spawn;

/// The argv and environment of the command, built once per worker thread.
pub struct Prepared {
    argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    /// Owns what `envp` points to.
    _env: Vec<CString>,
    envp: Vec<*const c_char>,
}

impl Prepared {
    pub fn new(command: &[String]) -> Result<Self, String> {
        let argv = command
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| format!("NUL byte in {a:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        if argv.is_empty() {
            return Err("spawn needs -- PROG ARGS...".into());
        }
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut entry: OsString = k;
                entry.push("=");
                entry.push(v);
                CString::new(entry.as_bytes()).ok()
            })
            .collect();
        let nul_ended = |v: &[CString]| spawn::nul_terminated(v.iter().map(CString::as_c_str));
        Ok(Self {
            argv_ptrs: nul_ended(&argv),
            envp: nul_ended(&env),
            argv,
            _env: env,
        })
    }

    /// Runs the command to its end; `Ok(true)` when it exited 0 having printed something.
    pub fn run(&self) -> Result<bool, String> {
        let null = dev_null()?;
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let pid = spawn::spawn(&spawn::Plan {
            program: &self.argv[0],
            argv: &self.argv_ptrs,
            envp: &self.envp,
            stdio: [
                null.as_raw_fd(),
                out_write.as_raw_fd(),
                err_write.as_raw_fd(),
            ],
        })
        .map_err(|e| format!("cannot spawn {:?}: {e}", self.argv[0]))?;
        drop((out_write, err_write));
        let printed = drain(&out_read, &err_read);
        let mut status = 0;
        // SAFETY: waits for the child just started, writing only into `status`.
        if unsafe { nix::libc::waitpid(pid.as_raw(), &mut status, 0) } < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        Ok(nix::libc::WIFEXITED(status) && nix::libc::WEXITSTATUS(status) == 0 && printed > 0)
    }
}

fn dev_null() -> Result<&'static File, String> {
    static NULL: OnceLock<Option<File>> = OnceLock::new();
    NULL.get_or_init(|| File::open("/dev/null").ok())
        .as_ref()
        .ok_or_else(|| "cannot open /dev/null".to_string())
}

/// A pipe, both ends close-on-exec (the child gets its end through dup2).
fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    if unsafe { nix::libc::pipe2(fds.as_mut_ptr(), nix::libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both were just returned by the kernel and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads both pipes to their end, as std's `Command::output` does (poll, then read what is
/// ready), and returns how many bytes came on the first.
fn drain(out: &OwnedFd, err: &OwnedFd) -> usize {
    let mut buf = [0u8; 4096];
    let mut printed = 0;
    let mut fds = [out.as_raw_fd(), err.as_raw_fd()].map(|fd| nix::libc::pollfd {
        fd,
        events: nix::libc::POLLIN,
        revents: 0,
    });
    while fds.iter().any(|p| p.fd >= 0) {
        // SAFETY: `fds` is a live array of pollfd; negative fds are ignored by poll.
        if unsafe { nix::libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            break;
        }
        for (i, p) in fds.iter_mut().enumerate() {
            if p.fd < 0 || p.revents == 0 {
                continue;
            }
            // SAFETY: reads into `buf` from a descriptor we own.
            let n = unsafe { nix::libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                p.fd = -1;
            } else if i == 0 {
                printed += n as usize;
            }
        }
    }
    printed
}
