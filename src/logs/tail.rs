//! Reads one session's output back from its task log, from a byte offset, a bounded amount at a
//! time: what `GET /async/output` answers. Nothing is kept in memory between reads; the file is
//! the only copy.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// One output line of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailLine {
    /// When it was logged (RFC 3339, local time).
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub text: String,
}

/// What one read found.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// The session's output lines from the offset on.
    pub lines: Vec<TailLine>,
    /// Where the next read starts.
    pub next_offset: u64,
    /// Whether the read reached the end of what the file holds.
    pub at_end: bool,
}

/// Why the log cannot be read from the offset.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The offset is past the end of the file: the log rotated since.
    #[error("offset {offset} is past the end of {} ({len} bytes): the log rotated; older output is in its rotated files", path.display())]
    Rotated {
        /// The log file.
        path: PathBuf,
        /// The asked offset.
        offset: u64,
        /// The file's length now.
        len: u64,
    },
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// Reads `session`'s stdout and stderr lines of the log at `path` from byte `offset`, stopping
/// once about `max_bytes` of text are gathered (always at least one line, when there is one).
pub fn read(path: &Path, session: Uuid, offset: u64, max_bytes: usize) -> Result<Tail, TailError> {
    let io_err = |source| TailError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        // No file yet: the task has not logged anything.
        Err(e) if e.kind() == io::ErrorKind::NotFound && offset == 0 => {
            return Ok(Tail {
                at_end: true,
                ..Tail::default()
            })
        }
        Err(e) => return Err(io_err(e)),
    };
    let len = file.metadata().map_err(io_err)?.len();
    if offset > len {
        return Err(TailError::Rotated {
            path: path.to_path_buf(),
            offset,
            len,
        });
    }
    file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    // Lines of other sessions and events are skipped, so scan more than is answered.
    let scan = (max_bytes.saturating_mul(4)).max(1 << 20);
    let want = usize::try_from(len - offset)
        .unwrap_or(usize::MAX)
        .min(scan);
    let mut buf = Vec::with_capacity(want);
    file.take(want as u64)
        .read_to_end(&mut buf)
        .map_err(io_err)?;

    let id = session.hyphenated().to_string();
    let mut tail = Tail::default();
    let mut consumed = 0usize;
    let mut gathered = 0usize;
    for line in buf.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") || (gathered >= max_bytes && !tail.lines.is_empty()) {
            break;
        }
        consumed += line.len();
        let text = String::from_utf8_lossy(&line[..line.len() - 1]);
        let mut parts = text.splitn(4, ' ');
        let (Some(time), Some(sid), Some(stream)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if sid != id || !(stream == "stdout" || stream == "stderr") {
            continue;
        }
        let text = parts.next().unwrap_or("").to_string();
        gathered += text.len() + 1;
        tail.lines.push(TailLine {
            time: time.into(),
            stream: stream.into(),
            text,
        });
    }
    // A single line longer than the scan is skipped rather than blocking every later read.
    if consumed == 0 && buf.len() == scan {
        consumed = buf.len();
    }
    tail.next_offset = offset + consumed as u64;
    tail.at_end = tail.next_offset == len;
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_output_lines_from_the_offset_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let text = format!(
            "T1 {a} event start\nT2 {a} stdout one\nT3 {b} stdout other\nT4 {a} stderr two words\nT5 {a} stdout three\n"
        );
        std::fs::write(&path, &text).unwrap();
        let all = read(&path, a, 0, 1 << 20).unwrap();
        let got: Vec<_> = all
            .lines
            .iter()
            .map(|l| (l.stream.as_str(), l.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("stdout", "one"),
                ("stderr", "two words"),
                ("stdout", "three")
            ]
        );
        assert!(all.at_end);
        assert_eq!(all.next_offset, text.len() as u64);
        // Bounded: one line per read, continuing from the offset.
        let first = read(&path, a, 0, 1).unwrap();
        assert_eq!(first.lines.len(), 1);
        assert!(!first.at_end);
        let second = read(&path, a, first.next_offset, 1).unwrap();
        assert_eq!(second.lines[0].text, "two words");
        let e = read(&path, a, text.len() as u64 + 1, 10).unwrap_err();
        assert!(e.to_string().contains("rotated"), "{e}");
    }
}
