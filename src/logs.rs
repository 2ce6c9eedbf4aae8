//! Log files: one per task (`<log-dir>/<name>.log`) and the service's own, all size-rotated.
//!
//! Every write goes through one writer thread ([`writer`]): logging only queues a record, so a
//! thread serving connections never waits for a disk or a rotation.
//!
//! Rotation is done by `file-rotate` (`BytesSurpassed`, so a line is never split across files)
//! rather than by hand: it already handles numbering, the bounded number of kept files and
//! reopening after rotation.

pub mod tail;
mod writer;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local};
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use uuid::Uuid;

use writer::{Target, Writer};

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
    writer: Arc<Writer>,
}

impl TaskLogs {
    /// Logs live in `dir`, which must exist. Starts the writer thread.
    pub fn new(dir: PathBuf, rotation: Rotation) -> Self {
        Self {
            dir,
            rotation,
            open: Mutex::new(HashMap::new()),
            writer: Writer::start(),
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
                    target: Target::new(rotating_file(&path, self.rotation)),
                    writer: self.writer.clone(),
                })
            })
            .clone()
    }

    /// The file task `name` logs to.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// A writer appending to the rotated file at `path` through the same writer thread (for the
    /// service's own log).
    pub fn appender(&self, path: &Path) -> Appender {
        Appender {
            target: Target::new(rotating_file(path, self.rotation)),
            writer: self.writer.clone(),
        }
    }

    /// Resolves once every record logged before the call is in its file.
    pub async fn flushed(&self) {
        self.writer.flushed().await;
    }

    /// Waits until every record logged before the call is in its file (blocks the thread).
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// Records dropped so far because the writer fell behind for too long.
    pub fn dropped(&self) -> u64 {
        self.writer.dropped()
    }
}

impl Drop for TaskLogs {
    fn drop(&mut self) {
        self.writer.close();
    }
}

/// Appends whatever is written to it, one record per `write`, through the log writer.
#[derive(Clone)]
pub struct Appender {
    target: Arc<Target>,
    writer: Arc<Writer>,
}

impl io::Write for Appender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.push(&self.target, buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One task's log file. Each record is one `write` of whole lines, so lines of concurrent runs
/// interleave but never mix.
pub struct TaskLog {
    target: Arc<Target>,
    writer: Arc<Writer>,
}

impl TaskLog {
    /// Appends one output line: `<time> <session> <stream> <text>`.
    pub fn line(&self, session: Uuid, stream: Stream, text: &[u8]) {
        let mut lines = self.lines(session, stream);
        lines.push(text);
        lines.write();
    }

    /// A reusable batch of output lines of one stream, appended in one `write` each time (the
    /// lines of one read from a pipe), so a task printing megabytes is logged in a write per read
    /// rather than one per line.
    pub fn lines(&self, session: Uuid, stream: Stream) -> Lines<'_> {
        Lines {
            log: self,
            session,
            stream,
            prefix: String::new(),
            record: Vec::new(),
        }
    }

    /// Appends a lifecycle event (start, exit, kill, cancellation). `text` is formatted straight
    /// into the record, so a caller can pass `format_args!` instead of building a string first.
    pub fn event(&self, session: Uuid, text: impl fmt::Display) {
        let mut record = prefix(session, "event");
        let _ = write!(record, "{text}");
        record.push('\n');
        self.writer.push(&self.target, record.into_bytes());
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

    /// Appends the lines added so far, if any, in one write, and empties the batch. The batch's
    /// buffer goes to the writer thread; the next batch starts a new one of the same capacity.
    pub fn write(&mut self) {
        if !self.record.is_empty() {
            let next = Vec::with_capacity(self.record.capacity());
            let record = std::mem::replace(&mut self.record, next);
            self.log.writer.push(&self.log.target, record);
        }
    }
}

/// `<time> <session> <stream> ` for the start of a record, the time in RFC 3339 local time with
/// milliseconds (`2026-11-25T09:30:00.123+08:00`).
///
/// Three of these are written for every call, so the date, time and offset of the current second
/// are formatted once per second and thread and only the milliseconds each time: chrono's own
/// formatting and the uuid's `Display` were 8 % of the service's instructions per call.
fn prefix(session: Uuid, stream: &str) -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut s = String::with_capacity(80);
    SECOND.with_borrow_mut(|second| {
        let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        if second.unix != secs {
            *second = Second::at(secs);
        }
        s.push_str(&second.date_time);
        let _ = write!(s, ".{:03}", since_epoch.subsec_millis());
        s.push_str(&second.offset);
    });
    s.push(' ');
    s.push_str(
        session
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    s.push(' ');
    s.push_str(stream);
    s.push(' ');
    s
}

/// One whole second in local time, formatted; see [`prefix`].
struct Second {
    unix: i64,
    /// `2026-11-25T09:30:00`
    date_time: String,
    /// `+08:00`
    offset: String,
}

impl Second {
    fn at(unix: i64) -> Self {
        // A clock before 1970 is logged as 1970; one past chrono's range as the epoch too.
        let t = DateTime::from_timestamp(unix, 0)
            .unwrap_or_default()
            .with_timezone(&Local);
        Self {
            unix,
            date_time: t.format("%Y-%m-%dT%H:%M:%S").to_string(),
            offset: t.format("%:z").to_string(),
        }
    }
}

thread_local! {
    static SECOND: RefCell<Second> = const {
        RefCell::new(Second {
            unix: i64::MIN,
            date_time: String::new(),
            offset: String::new(),
        })
    };
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
        logs.flush();
        let text = std::fs::read_to_string(dir.path().join("demo.log")).unwrap();
        assert!(
            text.ends_with(&format!("{id} stdout hello \u{fffd} world\n")),
            "{text}"
        );
        for _ in 0..20 {
            log.line(id, Stream::Stderr, b"0123456789");
        }
        logs.flush();
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
        logs.flush();
        let path = dir.path().join("batch.log");
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), "");
        lines.push(b"one");
        lines.push(b"");
        lines.push(b"\xfe");
        lines.write();
        lines.push(b"four");
        lines.write();
        logs.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let tails: Vec<&str> = text
            .lines()
            .map(|l| l.split_once(&format!("{id} stderr ")).unwrap().1)
            .collect();
        assert_eq!(tails, vec!["one", "", "\u{fffd}", "four"], "{text}");
    }

    /// The time of a prefix, parsed back; panics unless it is RFC 3339 with milliseconds.
    fn prefix_time(prefix: &str) -> DateTime<chrono::FixedOffset> {
        let stamp = prefix.split(' ').next().unwrap();
        let t = DateTime::parse_from_rfc3339(stamp).unwrap();
        assert_eq!(
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            stamp,
            "not RFC 3339 with milliseconds: {prefix}"
        );
        t
    }

    #[test]
    fn a_prefix_is_local_time_to_the_millisecond_the_session_and_the_stream() {
        let id = Uuid::new_v4();
        let before = Local::now();
        let p = prefix(id, "event");
        let after = Local::now();
        let t = prefix_time(&p);
        let slack = chrono::TimeDelta::milliseconds(1);
        assert!(
            t >= before - slack && t <= after,
            "{p} not between {before} and {after}"
        );
        assert_eq!(t.offset(), after.offset(), "{p}");
        assert!(p.ends_with(&format!(" {id} event ")), "{p}");
    }

    #[test]
    fn the_formatted_second_follows_the_clock() {
        for unix in [0, 1_700_000_000, 1_764_000_000] {
            let second = Second::at(unix);
            let want = DateTime::from_timestamp(unix, 0)
                .unwrap()
                .with_timezone(&Local)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
            assert_eq!(format!("{}.000{}", second.date_time, second.offset), want);
        }
        // The cached second is replaced once the clock passes it.
        let first = prefix_time(&prefix(Uuid::nil(), "stdout"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let now = prefix_time(&prefix(Uuid::nil(), "stdout"));
            assert!(now >= first, "{now} before {first}");
            if now.timestamp() > first.timestamp() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the time stayed at {now}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
