//! Log files: one per task (`<log-dir>/<name>.log`) and the service's own, all size-rotated.
//!
//! Rotation is done by `file-rotate` (`BytesSurpassed`, so a line is never split across files)
//! rather than by hand: it already handles numbering, the bounded number of kept files and
//! reopening after rotation.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{Local, SecondsFormat};
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use uuid::Uuid;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Size limits for every log file.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// Rotate once a file passes this many bytes.
    pub max_bytes: usize,
    /// How many rotated files to keep.
    pub max_files: usize,
}

/// Opens a size-rotated file; `dir` must exist (checked at startup).
pub fn rotating_file(path: &Path, rotation: Rotation) -> FileRotate<AppendCount> {
    FileRotate::new(
        path,
        AppendCount::new(rotation.max_files),
        ContentLimit::BytesSurpassed(rotation.max_bytes),
        Compression::None,
        None,
    )
}

/// Hands out the per-task logs, opening each file once.
pub struct TaskLogs {
    dir: PathBuf,
    rotation: Rotation,
    open: Mutex<HashMap<String, Arc<TaskLog>>>,
}

impl TaskLogs {
    /// Logs live in `dir`, which must exist.
    pub fn new(dir: PathBuf, rotation: Rotation) -> Self {
        Self {
            dir,
            rotation,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The log of task `name` (validated to be a safe file name).
    pub fn get(&self, name: &str) -> Arc<TaskLog> {
        let mut open = lock(&self.open);
        if let Some(log) = open.get(name) {
            return log.clone();
        }
        open.entry(name.to_string())
            .or_insert_with(|| {
                let path = self.dir.join(format!("{name}.log"));
                Arc::new(TaskLog {
                    file: Mutex::new(rotating_file(&path, self.rotation)),
                })
            })
            .clone()
    }
}

/// One task's log file. Each record is one `write` of whole lines, so lines of concurrent runs
/// interleave but never mix.
pub struct TaskLog {
    file: Mutex<FileRotate<AppendCount>>,
}

impl TaskLog {
    /// Appends one output line: `<time> <session> <stream> <text>`.
    pub fn line(&self, session: Uuid, stream: Stream, text: &[u8]) {
        let mut lines = self.lines(session, stream);
        lines.push(text);
        lines.write();
    }

    /// A reusable batch of output lines of one stream, appended in one `write` each time (the
    /// lines of one read from a pipe: a task printing 50 MB is logged in about a thousand writes
    /// instead of half a million, see BENCHMARKS.md).
    pub fn lines(&self, session: Uuid, stream: Stream) -> Lines<'_> {
        Lines {
            log: self,
            session,
            stream,
            prefix: String::new(),
            record: Vec::new(),
        }
    }

    /// Appends a lifecycle event (start, exit, kill, cancellation).
    pub fn event(&self, session: Uuid, text: &str) {
        let mut record = prefix(session, "event");
        record.push_str(text);
        record.push('\n');
        self.write(record.as_bytes());
    }

    fn write(&self, record: &[u8]) {
        let mut file = lock(&self.file);
        if let Err(e) = file.write_all(record).and_then(|()| file.flush()) {
            tracing::error!(error = %e, "cannot write a task log line");
        }
    }
}

/// Output lines of one stream to be appended together; see [`TaskLog::lines`].
pub struct Lines<'a> {
    log: &'a TaskLog,
    session: Uuid,
    stream: Stream,
    prefix: String,
    record: Vec<u8>,
}

impl Lines<'_> {
    /// Adds one line (without its newline); the lines of a batch carry the time of its first.
    pub fn push(&mut self, text: &[u8]) {
        if self.record.is_empty() {
            self.prefix = prefix(self.session, self.stream.as_str());
        }
        self.record.reserve(self.prefix.len() + text.len() + 1);
        self.record.extend_from_slice(self.prefix.as_bytes());
        // Invalid UTF-8 is replaced so the log stays readable text.
        self.record
            .extend_from_slice(String::from_utf8_lossy(text).as_bytes());
        self.record.push(b'\n');
    }

    /// Appends the lines added so far, if any, in one write, and empties the batch (its buffer
    /// is kept for the next one, so a long output does not allocate a new one per read).
    pub fn write(&mut self) {
        if !self.record.is_empty() {
            self.log.write(&self.record);
            self.record.clear();
        }
    }
}

fn prefix(session: Uuid, stream: &str) -> String {
    let mut s = String::with_capacity(80);
    let _ = write!(
        s,
        "{} {session} {stream} ",
        Local::now().to_rfc3339_opts(SecondsFormat::Millis, false)
    );
    s
}

/// Locks a mutex, carrying on after a panic elsewhere: log state is always consistent.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Task logs in a fresh temporary folder, rotating after `max_bytes`, keeping 2 files.
    fn temp_logs(max_bytes: usize) -> (tempfile::TempDir, TaskLogs) {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes,
            max_files: 2,
        };
        let logs = TaskLogs::new(dir.path().to_path_buf(), rotation);
        (dir, logs)
    }

    #[test]
    fn lines_carry_time_session_and_stream_and_rotate() {
        let (dir, logs) = temp_logs(200);
        let log = logs.get("demo");
        let id = Uuid::new_v4();
        log.line(id, Stream::Stdout, b"hello \xff world");
        let text = std::fs::read_to_string(dir.path().join("demo.log")).unwrap();
        assert!(
            text.ends_with(&format!("{id} stdout hello \u{fffd} world\n")),
            "{text}"
        );
        for _ in 0..20 {
            log.line(id, Stream::Stderr, b"0123456789");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.contains(&"demo.log.1".to_string()), "{names:?}");
        assert!(!names.contains(&"demo.log.3".to_string()), "{names:?}");
    }

    #[test]
    fn a_batch_is_one_record_per_line_and_can_be_reused() {
        let (dir, logs) = temp_logs(1 << 20);
        let log = logs.get("batch");
        let id = Uuid::new_v4();
        let mut lines = log.lines(id, Stream::Stderr);
        lines.write();
        let path = dir.path().join("batch.log");
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), "");
        lines.push(b"one");
        lines.push(b"");
        lines.push(b"\xfe");
        lines.write();
        lines.push(b"four");
        lines.write();
        let text = std::fs::read_to_string(&path).unwrap();
        let tails: Vec<&str> = text
            .lines()
            .map(|l| l.split_once(&format!("{id} stderr ")).unwrap().1)
            .collect();
        assert_eq!(tails, vec!["one", "", "\u{fffd}", "four"], "{text}");
    }
}
