//! Request and resource limits of `celery-service run`: each has a flag, a default, and an answer
//! that names the flag.

use std::time::Duration;

/// The limits in force.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (`--max-body-bytes`; 413 beyond).
    pub max_body: usize,
    /// Most arguments one request may post to an external task (`--max-args`; 400 beyond).
    pub max_args: usize,
    /// Longest posted argument, in bytes (`--max-arg-bytes`; 400 beyond).
    pub max_arg_bytes: usize,
    /// Most connections held at once (`--max-connections`): beyond it the one idle longest is
    /// closed, or, when all are busy with requests, the new one is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, counted from the accept for a
    /// new connection (`--header-read-timeout`).
    pub header_read_timeout: Duration,
    /// How long a connection may stay idle after a response (`--keep-alive-timeout`).
    pub keep_alive_timeout: Duration,
    /// Most async sessions held in memory (`--max-sessions`; 503 beyond).
    pub max_sessions: usize,
    /// Most output bytes one `/async/output` answer carries (`--output-max-bytes`).
    pub output_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 1024 * 1024,
            max_args: 256,
            max_arg_bytes: 64 * 1024,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(60),
            max_sessions: 10_000,
            output_max_bytes: 256 * 1024,
        }
    }
}

/// Open files the service keeps for itself (logs, the result store, the listener, the config
/// watch) before `--max-connections` is derived from the open-files limit.
const OWN_FILES: u64 = 256;

/// The default `--max-connections` for an open-files limit of `open_files`: half of what is left
/// after the service's own files, the other half being for runs (each holds its two output pipes
/// and a process handle while it goes) and their log files. At least 16.
pub fn default_max_connections(open_files: u64) -> usize {
    let half = open_files.saturating_sub(OWN_FILES) / 2;
    usize::try_from(half).unwrap_or(usize::MAX).max(16)
}

/// The default `--max-connections` for the open-files limit in force now (raised at start).
pub fn max_connections_for_open_files() -> usize {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    default_max_connections(soft)
}

impl Limits {
    /// Checks posted arguments; `Err` names the limit, for an HTTP 400.
    pub fn check_args(&self, args: &[String]) -> Result<(), String> {
        if args.len() > self.max_args {
            return Err(format!(
                "{} arguments posted; at most {} are accepted (--max-args)",
                args.len(),
                self.max_args
            ));
        }
        if let Some((i, a)) = args
            .iter()
            .enumerate()
            .find(|(_, a)| a.len() > self.max_arg_bytes)
        {
            return Err(format!(
                "argument {i} is {} bytes; at most {} are accepted (--max-arg-bytes)",
                a.len(),
                self.max_arg_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_connection_limit_leaves_room_for_runs_and_own_files() {
        assert_eq!(default_max_connections(1024), 384);
        assert_eq!(default_max_connections(65_536), 32_640);
        assert_eq!(default_max_connections(100), 16);
    }

    #[test]
    fn arguments_over_either_limit_are_named() {
        let l = Limits {
            max_args: 2,
            max_arg_bytes: 3,
            ..Limits::default()
        };
        assert!(l.check_args(&["abc".into(), "d".into()]).is_ok());
        let e = l
            .check_args(&["a".into(), "b".into(), "c".into()])
            .unwrap_err();
        assert!(e.contains("--max-args"), "{e}");
        let e = l.check_args(&["abcd".into()]).unwrap_err();
        assert!(
            e.contains("argument 0 is 4 bytes") && e.contains("--max-arg-bytes"),
            "{e}"
        );
    }
}
