//! The log writer: one thread that does every write (and so every rotation) of the task logs and
//! the service log, fed by a queue bounded in bytes.
//!
//! Whoever logs (a run reading its child's pipes, a handler, the tracing layer) only appends a
//! record to the queue, so no thread that serves connections ever waits for a disk or a rotation.
//! When the queue is full a record waits for room (backpressure, so 50 MB of output is logged
//! whole), on a runtime worker through `block_in_place`, which first hands the worker's other
//! tasks to another thread; it is dropped, counted and reported, only if no room comes within
//! [`MAX_WAIT`] (a stuck disk), or if it comes from where waiting is impossible (the writer
//! thread itself, a current-thread runtime). A log that lost records gets an `event` line saying
//! how many, and the service log a warning.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use file_rotate::suffix::AppendCount;
use file_rotate::FileRotate;
use tokio::runtime::{Handle, RuntimeFlavor};
use uuid::Uuid;

use super::{lock, prefix};

/// Records queued beyond this many bytes wait for room.
const MAX_QUEUED: usize = 8 * 1024 * 1024;

/// How long a record waits for room before it is dropped.
const MAX_WAIT: Duration = Duration::from_secs(2);

/// One log file, written only by the writer thread.
pub struct Target {
    file: Mutex<FileRotate<AppendCount>>,
    /// Records dropped since the last one written.
    dropped: AtomicU64,
}

impl Target {
    /// A file for [`Writer::push`].
    pub fn new(file: FileRotate<AppendCount>) -> Arc<Self> {
        Arc::new(Self {
            file: Mutex::new(file),
            dropped: AtomicU64::new(0),
        })
    }
}

struct Job {
    target: Arc<Target>,
    record: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Bytes queued or being written.
    bytes: usize,
    closed: bool,
}

/// The queue and the thread that empties it.
#[derive(Default)]
pub struct Writer {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or the writer is closed.
    work: Condvar,
    /// Signalled when a batch has been written (room, and progress for [`Writer::flush`]).
    done: Condvar,
    /// Sequence number of the last record queued, and of the last one written.
    queued: AtomicU64,
    written: AtomicU64,
    /// Wakes [`Writer::flushed`] callers after each batch.
    flushed: tokio::sync::Notify,
    /// Every record dropped so far.
    dropped: AtomicU64,
}

thread_local! {
    static ON_WRITER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Writer {
    /// Starts the writer thread; it ends once [`Writer::close`] is called and the queue is empty.
    ///
    /// Panics if the thread cannot be started, as `std::thread::spawn` does: the service cannot
    /// run without it, and this happens once, at startup.
    pub fn start() -> Arc<Self> {
        let writer = Arc::new(Self::default());
        let w = writer.clone();
        let started = std::thread::Builder::new()
            .name("cs-log-writer".into())
            .spawn(move || {
                ON_WRITER.set(true);
                w.run();
            });
        if let Err(e) = started {
            panic!("cannot start the log writer thread: {e}");
        }
        writer
    }

    /// Queues `record` for `target`; see the module documentation for a full queue.
    pub fn push(&self, target: &Arc<Target>, record: Vec<u8>) {
        let len = record.len();
        let mut q = lock(&self.queue);
        if !fits(&q, len) {
            let room = match Handle::try_current().map(|h| h.runtime_flavor()) {
                _ if ON_WRITER.get() => false,
                Ok(RuntimeFlavor::CurrentThread) => false,
                // `block_in_place` runs the wait at once on a thread that is no worker.
                Ok(_) => {
                    let (guard, room) = tokio::task::block_in_place(|| self.wait_room(q, len));
                    q = guard;
                    room
                }
                Err(_) => {
                    let (guard, room) = self.wait_room(q, len);
                    q = guard;
                    room
                }
            };
            if !room {
                target.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        q.bytes += len;
        q.jobs.push_back(Job {
            target: target.clone(),
            record,
        });
        self.queued.fetch_add(1, Ordering::Release);
        drop(q);
        self.work.notify_one();
    }

    fn wait_room<'a>(
        &self,
        mut q: MutexGuard<'a, Queue>,
        len: usize,
    ) -> (MutexGuard<'a, Queue>, bool) {
        let deadline = Instant::now() + MAX_WAIT;
        while !fits(&q, len) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (q, false);
            }
            q = self
                .done
                .wait_timeout(q, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        (q, true)
    }

    /// Resolves once every record queued before the call has been written.
    pub async fn flushed(&self) {
        let target = self.queued.load(Ordering::Acquire);
        loop {
            let notified = self.flushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.written.load(Ordering::Acquire) >= target {
                return;
            }
            notified.await;
        }
    }

    /// Waits until every record queued before the call has been written.
    pub fn flush(&self) {
        let target = self.queued.load(Ordering::Acquire);
        let mut q = lock(&self.queue);
        while self.written.load(Ordering::Acquire) < target && !q.closed {
            q = self
                .done
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Records dropped so far because the queue stayed full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lets the thread end once it has written what is queued.
    pub fn close(&self) {
        lock(&self.queue).closed = true;
        self.work.notify_one();
    }

    fn run(&self) {
        loop {
            let (jobs, last) = {
                let mut q = lock(&self.queue);
                while q.jobs.is_empty() {
                    if q.closed {
                        drop(q);
                        self.done.notify_all();
                        return;
                    }
                    q = self
                        .work
                        .wait(q)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                // Every record up to this sequence number is in the batch.
                let last = self.queued.load(Ordering::Acquire);
                (q.jobs.drain(..).collect::<Vec<_>>(), last)
            };
            let bytes: usize = jobs.iter().map(|j| j.record.len()).sum();
            for job in jobs {
                write(&job.target, &job.record);
            }
            {
                let mut q = lock(&self.queue);
                q.bytes -= bytes;
                self.written.store(last, Ordering::Release);
            }
            self.done.notify_all();
            self.flushed.notify_waiters();
        }
    }
}

fn fits(q: &Queue, len: usize) -> bool {
    q.bytes == 0 || q.bytes + len <= MAX_QUEUED
}

fn write(target: &Target, record: &[u8]) {
    let mut file = lock(&target.file);
    let dropped = target.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let mut note = prefix(Uuid::nil(), "event");
        note.push_str(&format!(
            "{dropped} records were not logged: the log writer fell behind\n"
        ));
        let _ = file.write_all(note.as_bytes());
        tracing::warn!(
            dropped,
            "log records were dropped: the log writer fell behind"
        );
    }
    if let Err(e) = file.write_all(record).and_then(|()| file.flush()) {
        tracing::error!(error = %e, "cannot write a log record");
    }
}
