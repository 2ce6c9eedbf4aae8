//! Starting a child, the one way the service does it: `tokio::process::Command` wrapped by
//! `process-wrap` (watchexec's crate) as the leader of a process group of its own.
//!
//! This file uses nothing of the service but tokio and process-wrap, because the benchmark's floor
//! (bench/loadgen/src/floor.rs) compiles it in as it is: the floor then starts its children
//! exactly as the service does, and the ratio to it measures only what the service adds.
//!
//! What the child gets is std's doing, under tokio: the service's environment plus the given
//! variables, stdin from `/dev/null`, stdout and stderr into fresh pipes, and SIGPIPE back at its
//! default (Rust ignores it in the service; std resets it in every child). The child's signal
//! mask is the spawning thread's, which std passes on as it is: the service blocks no signal in
//! any thread, so it is empty. A program without a `/` is looked up in `PATH`. The tests below
//! check each of these on a real child.

use std::ffi::{OsStr, OsString};
use std::io;
use std::process::Stdio;

use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup};

/// A started child: the leader of its own process group (its pid is the group's id), with its
/// stdout and stderr as pipes to read.
pub type Child = Box<dyn ChildWrapper>;

/// Starts `program args…` in a new process group, with the service's environment plus `vars`.
///
/// The child is killed (the leader only; the run's own guard takes care of its group) if it is
/// dropped before it has been waited for, and then reaped by tokio in the background. No hook runs
/// in the child before it executes, so std starts it with glibc's `posix_spawn` (a `vfork`-style
/// start that copies none of the service's memory) rather than a `fork`.
pub fn spawn(program: &OsStr, args: &[OsString], vars: &[(&str, &str)]) -> io::Result<Child> {
    let mut command = CommandWrap::with_new(program, |c| {
        c.args(args)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    });
    command.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    command.spawn()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Runs `argv` through [`spawn`] with `CS_SPAWN_TEST=yes`; returns the child's pid, its
    /// stdout and stderr, and its exit code.
    async fn output(argv: &[&str]) -> io::Result<(u32, String, String, Option<i32>)> {
        let args: Vec<OsString> = argv[1..].iter().map(OsString::from).collect();
        let mut child = spawn(OsStr::new(argv[0]), &args, &[("CS_SPAWN_TEST", "yes")])?;
        let pid = child.id().expect("a pid before the child is waited for");
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout().take().expect("stdout is piped");
        let mut stderr = child.stderr().take().expect("stderr is piped");
        let (a, b) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        a?;
        b?;
        let status = child.wait().await?;
        Ok((pid, out, err, status.code()))
    }

    /// The value of a `Name:\tvalue` line of /proc/<pid>/status text.
    fn field<'a>(status: &'a str, name: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(":\t"))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    }

    #[tokio::test]
    async fn a_child_starts_with_no_blocked_signals_sigpipe_at_default_and_a_group_of_its_own() {
        // The test process ignores SIGPIPE, as every Rust program does; the child must not.
        let (pid, status, _, code) = output(&["/bin/cat", "/proc/self/status"]).await.unwrap();
        assert_eq!(code, Some(0));
        assert_eq!(field(&status, "SigBlk"), "0000000000000000");
        let ignored = u64::from_str_radix(field(&status, "SigIgn"), 16).unwrap();
        let sigpipe = Signal::SIGPIPE as i32;
        assert_eq!(
            ignored & (1 << (sigpipe - 1)),
            0,
            "SIGPIPE ignored: {status}"
        );
        assert_eq!(field(&status, "Pid"), pid.to_string());
        // NSpgid is the process group: the child leads its own.
        assert_eq!(field(&status, "NSpgid"), pid.to_string());
    }

    #[tokio::test]
    async fn a_signal_blocked_by_the_spawning_thread_is_blocked_in_the_child() {
        // Why the service must never block a signal in its threads (it once blocked SIGCHLD in
        // all of them): std resets SIGPIPE in the child but passes the signal mask on as it is.
        // A current-thread runtime spawns on the test's own thread.
        let mut blocked = SigSet::empty();
        blocked.add(Signal::SIGUSR2);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).unwrap();
        let got = output(&["/bin/cat", "/proc/self/status"]).await;
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&blocked), None).unwrap();
        let (_, status, _, _) = got.unwrap();
        let sigusr2 = Signal::SIGUSR2 as i32;
        assert_eq!(
            u64::from_str_radix(field(&status, "SigBlk"), 16).unwrap(),
            1 << (sigusr2 - 1)
        );
    }

    #[tokio::test]
    async fn a_child_gets_the_environment_stdin_and_argv() {
        let script = r#"echo "$CS_SPAWN_TEST $1 ${PATH:+path}"; readlink /proc/self/fd/0; echo oops >&2; exit 3"#;
        let (_, out, err, code) = output(&["sh", "-c", script, "sh", "it's one argument"])
            .await
            .unwrap();
        assert_eq!(code, Some(3));
        assert_eq!(out, "yes it's one argument path\n/dev/null\n");
        assert_eq!(err, "oops\n");
    }

    #[tokio::test]
    async fn a_program_that_cannot_be_executed_is_an_error_naming_why() {
        let kind = |argv: &'static [&'static str]| async move {
            output(argv).await.map(|_| ()).unwrap_err().kind()
        };
        assert_eq!(kind(&["cs-no-such-program"]).await, io::ErrorKind::NotFound);
        assert_eq!(
            kind(&["/nonexistent/dir/prog"]).await,
            io::ErrorKind::NotFound
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let err = output(&[plain.to_str().unwrap()]).await.map(|_| ());
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        // Executable but not a format the kernel knows: no shell fallback.
        let text = dir.path().join("text");
        std::fs::write(&text, "echo hello\n").unwrap();
        std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = output(&[text.to_str().unwrap()]).await.map(|_| ());
        assert_eq!(err.unwrap_err().raw_os_error(), Some(nix::libc::ENOEXEC));
    }
}
