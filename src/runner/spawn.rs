//! Starting a child: what glibc's `posix_spawnp` does, minus a stack mapped and unmapped for every
//! child.
//!
//! `posix_spawn` clones with `CLONE_VM | CLONE_VFORK` onto a stack it maps for that one child and
//! unmaps right after. The unmap of a mapping the other worker thread may have in its TLB costs a
//! cross-CPU TLB flush, which on a VM is an exit per IPI; in the profile under load the `munmap`
//! alone was a tenth of the service's CPU per call and the `mmap` another 4 % (BENCHMARKS.md,
//! step 19). Here each thread maps one child stack once, with a guard page, and reuses it: the
//! clone blocks the thread until the child has called `execve` or exited, so the stack is never
//! used by two children at once.
//!
//! The child does what glibc's does, in the same order: every signal with a handler goes back to
//! its default (the child shares the service's memory until it execs, so a handler must never run
//! in it), SIGPIPE too, then it leaves for a process group of its own, takes its three standard
//! descriptors, gets an empty signal mask and execs, looking the program up in `PATH` when its
//! name has no `/`. If the exec fails the child stores `errno` where the parent reads it once the
//! clone returns, and exits with 127 without running any of the service's code.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::libc::{self, c_char, c_int};
use nix::sched::{clone, CloneFlags};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// The child's usable stack. The child runs a few libc calls and a path buffer; glibc gives its own
/// child 64 KiB plus the size of argv, and so do we.
const STACK_SIZE: usize = 64 * 1024;

/// The longest path the `PATH` lookup builds (Linux's `PATH_MAX`).
const PATH_MAX: usize = 4096;

/// What the child needs, all prepared by the parent: the child may not allocate.
pub struct Plan<'a> {
    /// The program as argv[0] names it.
    pub program: &'a CStr,
    /// NULL-terminated argv.
    pub argv: &'a [*const c_char],
    /// NULL-terminated environment.
    pub envp: &'a [*const c_char],
    /// The descriptors that become the child's 0, 1 and 2.
    pub stdio: [RawFd; 3],
}

/// The NULL-terminated array of pointers a [`Plan`]'s `argv` and `envp` are: one per string, in
/// order, then NULL. The strings must outlive the array's use.
pub fn nul_terminated<'s>(strings: impl IntoIterator<Item = &'s CStr>) -> Vec<*const c_char> {
    let strings = strings.into_iter();
    let mut pointers = Vec::with_capacity(strings.size_hint().0 + 1);
    pointers.extend(strings.map(CStr::as_ptr));
    pointers.push(ptr::null());
    pointers
}

/// Starts `plan` in a process group of its own and returns its pid.
pub fn spawn(plan: &Plan<'_>) -> io::Result<Pid> {
    if plan.argv.last() != Some(&ptr::null()) || plan.envp.last() != Some(&ptr::null()) {
        return Err(io::Error::other("argv and envp must end with NULL"));
    }
    let search = search_dirs(plan.program);
    let failed = AtomicI32::new(0);
    let child_main = Box::new(|| -> isize {
        // SAFETY: this runs in the cloned child, on its own stack, in the service's memory until
        // it execs; `child` touches nothing but the plan, the stack and raw system calls.
        unsafe { child(plan, search, &failed) }
    });
    // Every signal stays blocked in the child until it has dropped the service's handlers.
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    let cloned = STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        let stack = match stack.as_mut() {
            Some(stack) => stack,
            None => stack.insert(ChildStack::new()?),
        };
        // SAFETY: CLONE_VFORK suspends this thread until the child has exec'd or exited, so the
        // child has the stack to itself and `plan`, `failed` and the closure outlive its use of
        // them; every signal is blocked, so no handler of ours runs on the child's stack.
        unsafe {
            clone(
                child_main,
                stack.usable(),
                CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
                Some(libc::SIGCHLD),
            )
        }
        .map_err(io::Error::from)
    });
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    let pid = cloned?;
    match failed.load(Ordering::Acquire) {
        0 => Ok(pid),
        errno => {
            // The child has exited (or is about to): reap it so no zombie is left.
            let _ = waitpid(pid, None);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The directories to look the program up in: none when its name has a `/` (it is used as is).
fn search_dirs(program: &CStr) -> &'static [CString] {
    if program.to_bytes().contains(&b'/') {
        return &[];
    }
    static DIRS: OnceLock<Vec<CString>> = OnceLock::new();
    DIRS.get_or_init(|| {
        // glibc's default when PATH is unset; the service never changes its own environment.
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
        std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())
            .split(|b| *b == b':')
            .filter_map(|dir| CString::new(dir).ok())
            .collect()
    })
}

/// The child side. Returns only if `failed` could not even be reported, which cannot happen; the
/// return value becomes its exit status.
///
/// # Safety
/// Only in a child cloned with `CLONE_VM | CLONE_VFORK` and every signal blocked.
unsafe fn child(plan: &Plan<'_>, search: &[CString], failed: &AtomicI32) -> isize {
    let fail = |errno: c_int| -> isize {
        failed.store(errno.max(1), Ordering::Release);
        // SAFETY: `_exit` runs no atexit handlers and flushes nothing of the service's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: plain system calls on values owned by the plan or this stack frame.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            if sig != libc::SIGPIPE {
                // glibc's own signals answer EINVAL; they are reset at exec anyway.
                if libc::sigaction(sig, ptr::null(), &mut action) != 0
                    || action.sa_sigaction == libc::SIG_DFL
                    || action.sa_sigaction == libc::SIG_IGN
                {
                    continue;
                }
            }
            let default: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, &default, ptr::null_mut());
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(Errno::last_raw());
        }
        for (target, &fd) in plan.stdio.iter().enumerate() {
            let target = target as c_int;
            let done = if fd == target {
                // dup2 onto itself keeps close-on-exec; clear it instead.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if done < 0 {
                return fail(Errno::last_raw());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        if search.is_empty() {
            libc::execve(
                plan.program.as_ptr(),
                plan.argv.as_ptr(),
                plan.envp.as_ptr(),
            );
            return fail(Errno::last_raw());
        }
        fail(exec_in_path(plan, search))
    }
}

/// Tries `dir/program` for each dir of `PATH` the way glibc's `posix_spawnp` does, and returns the
/// errno to report when none could be executed.
///
/// # Safety
/// As for [`child`].
unsafe fn exec_in_path(plan: &Plan<'_>, search: &[CString]) -> c_int {
    let name = plan.program.to_bytes_with_nul();
    let mut buf = [0u8; PATH_MAX];
    let mut eacces = false;
    let mut last = libc::ENOENT;
    for dir in search {
        let dir = dir.to_bytes();
        // An empty entry is the current directory.
        let slash = usize::from(!dir.is_empty());
        let len = dir.len() + slash + name.len();
        if len > buf.len() {
            last = libc::ENAMETOOLONG;
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        if slash == 1 {
            buf[dir.len()] = b'/';
        }
        buf[dir.len() + slash..len].copy_from_slice(name);
        // SAFETY: `buf` holds a NUL-terminated path; argv and envp end with NULL.
        unsafe { libc::execve(buf.as_ptr().cast(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
        last = Errno::last_raw();
        match last {
            libc::EACCES => eacces = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            other => return other,
        }
    }
    if eacces {
        libc::EACCES
    } else {
        last
    }
}

thread_local! {
    /// This thread's child stack, mapped at its first spawn.
    static STACK: RefCell<Option<ChildStack>> = const { RefCell::new(None) };
}

/// A stack for cloned children: a guard page, then [`STACK_SIZE`] bytes.
struct ChildStack {
    base: NonNull<libc::c_void>,
    guard: usize,
}

impl ChildStack {
    fn new() -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // SAFETY: a fresh private anonymous mapping, owned by the returned value.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                page + STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self {
            base: NonNull::new(base).ok_or_else(|| io::Error::other("mmap returned NULL"))?,
            guard: page,
        };
        // SAFETY: the first page of the mapping just made; a child overflowing into it faults.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    fn usable(&mut self) -> &mut [u8] {
        // SAFETY: the bytes after the guard page are mapped read-write for the life of `self`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().cast::<u8>().add(self.guard),
                STACK_SIZE,
            )
        }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used by any child.
        unsafe { libc::munmap(self.base.as_ptr(), self.guard + STACK_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::{AsRawFd, OwnedFd};

    use nix::sys::wait::WaitStatus;
    use nix::unistd::pipe;

    use super::*;

    /// Runs `argv` through [`spawn`] with stdin from `/dev/null` and stdout and stderr into one
    /// pipe; returns the child's pid, its output and how it ended.
    fn output(argv: &[&str]) -> io::Result<(Pid, String, WaitStatus)> {
        let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let argv_ptrs = nul_terminated(argv.iter().map(CString::as_c_str));
        let envp = nul_terminated([c"PATH=/usr/bin:/bin", c"CS_SPAWN_TEST=yes"]);
        let null = File::open("/dev/null")?;
        let (read, write): (OwnedFd, OwnedFd) = pipe()?;
        let pid = spawn(&Plan {
            program: &argv[0],
            argv: &argv_ptrs,
            envp: &envp,
            stdio: [null.as_raw_fd(), write.as_raw_fd(), write.as_raw_fd()],
        })?;
        drop(write);
        let mut text = String::new();
        File::from(read).read_to_string(&mut text)?;
        let status = waitpid(pid, None)?;
        Ok((pid, text, status))
    }

    /// The value of a `Name:\tvalue` line of /proc/<pid>/status text.
    fn field<'a>(status: &'a str, name: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(":\t"))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    }

    #[test]
    fn a_child_starts_with_no_blocked_signals_sigpipe_at_default_and_a_group_of_its_own() {
        // The service ignores SIGPIPE (Rust does at startup) and `spawn` blocks every signal
        // around the clone; neither may reach the program.
        let (pid, status, exit) = output(&["/bin/cat", "/proc/self/status"]).unwrap();
        assert_eq!(exit, WaitStatus::Exited(pid, 0));
        assert_eq!(field(&status, "SigBlk"), "0000000000000000");
        let ignored = u64::from_str_radix(field(&status, "SigIgn"), 16).unwrap();
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored: {status}"
        );
        assert_eq!(field(&status, "Pid"), pid.to_string());
        // NSpgid is the process group: the child leads its own.
        assert_eq!(field(&status, "NSpgid"), pid.to_string());
    }

    #[test]
    fn a_child_gets_the_given_environment_stdin_and_argv() {
        let (pid, text, exit) = output(&[
            "sh",
            "-c",
            r#"echo "$CS_SPAWN_TEST $1"; readlink /proc/self/fd/0; echo oops >&2; exit 3"#,
            "sh",
            "it's one argument",
        ])
        .unwrap();
        assert_eq!(exit, WaitStatus::Exited(pid, 3));
        assert_eq!(text, "yes it's one argument\n/dev/null\noops\n");
    }

    #[test]
    fn a_program_that_cannot_be_executed_is_an_error_naming_why() {
        let kind = |argv: &[&str]| output(argv).map(|_| ()).unwrap_err().kind();
        assert_eq!(kind(&["cs-no-such-program"]), io::ErrorKind::NotFound);
        assert_eq!(kind(&["/nonexistent/dir/prog"]), io::ErrorKind::NotFound);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert_eq!(
            kind(&[plain.to_str().unwrap()]),
            io::ErrorKind::PermissionDenied
        );
        // Executable but not a format the kernel knows: no shell fallback, as with posix_spawn.
        let text = dir.path().join("text");
        std::fs::write(&text, "echo hello\n").unwrap();
        std::fs::set_permissions(&text, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = output(&[text.to_str().unwrap()]).map(|_| ()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOEXEC));
    }

    #[test]
    fn the_path_lookup_skips_missing_entries_and_reports_eacces_over_enoent() {
        let dir = tempfile::tempdir().unwrap();
        let name = "cs-spawn-not-executable";
        std::fs::write(dir.path().join(name), "#!/bin/sh\n").unwrap();
        let argv = CString::new(name).unwrap();
        let argv_ptrs = [argv.as_ptr(), ptr::null()];
        let envp = [ptr::null()];
        let plan = Plan {
            program: &argv,
            argv: &argv_ptrs,
            envp: &envp,
            stdio: [0, 1, 2],
        };
        let dirs = |dirs: &[&str]| -> Vec<CString> {
            dirs.iter().map(|d| CString::new(*d).unwrap()).collect()
        };
        let here = dir.path().to_str().unwrap();
        // Only failing execs are tried here: a successful one would replace the test process.
        // SAFETY: every exec fails and returns, so this runs like any function.
        unsafe {
            assert_eq!(
                exec_in_path(&plan, &dirs(&["/nonexistent", here, "/also-not"])),
                libc::EACCES
            );
            assert_eq!(
                exec_in_path(&plan, &dirs(&["/nonexistent", ""])),
                libc::ENOENT
            );
            let long = "d".repeat(PATH_MAX);
            assert_eq!(exec_in_path(&plan, &dirs(&[&long])), libc::ENAMETOOLONG);
        }
    }

    #[test]
    fn argv_and_envp_must_end_with_null() {
        let argv = CString::new("/bin/true").unwrap();
        let unterminated = [argv.as_ptr()];
        let envp = [ptr::null()];
        let plan = Plan {
            program: &argv,
            argv: &unterminated,
            envp: &envp,
            stdio: [0, 1, 2],
        };
        assert!(spawn(&plan).is_err());
    }
}
