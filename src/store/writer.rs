//! The queue and the batch writer: [`Queue::put`] hands a record over without waiting; the
//! writer takes records off the queue in batches, keeps the newest record of each session in a
//! batch, and writes them to the [`Backend`]. A failed write is logged and retried until it
//! succeeds or the store closes: a record is never dropped here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backend::Backend;
use super::record::Record;
use crate::logs::lock;

/// How many records may wait for the writer before puts go through a task each.
const QUEUE: usize = 65_536;
/// Most records written in one batch.
pub const BATCH: usize = 512;
/// How often the writer retries a failed write and lets the backend replay its spool.
pub const TICK: Duration = Duration::from_millis(500);
/// How long the writer waits for more records after the first of a batch (a group commit): the
/// start and end records of a short run then make one write, and a burst of runs one
/// transaction. Records are in the queue, not yet stored, during it, as they are while a write
/// goes on; a session's answers come from memory meanwhile.
const LINGER: Duration = Duration::from_millis(25);

/// What the writer tells the store's status.
#[derive(Default)]
pub struct Stats {
    /// Records put and not yet taken by the writer.
    pub queued: AtomicUsize,
    /// The writer's last write error, until a write succeeds.
    pub last_error: Mutex<Option<String>>,
}

/// The sending side of the queue.
pub struct Queue {
    tx: mpsc::Sender<Record>,
    stats: Arc<Stats>,
}

impl Queue {
    /// A queue and its receiving end, for [`Writer::run`].
    pub fn new(stats: Arc<Stats>) -> (Self, mpsc::Receiver<Record>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx, stats }, rx)
    }

    /// Queues a record; never waits and never fails. A full queue hands the record to a task
    /// of its own that waits for room, so even then it is not dropped.
    pub fn put(&self, record: Record) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(record)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = tx.send(record).await {
                        tracing::error!(session_id = %e.0.session_id, "a result record came after the store closed");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(record)) => {
                tracing::error!(session_id = %record.session_id, "a result record came after the store closed");
            }
        }
    }
}

/// The newest record of each session in `batch`, in first-seen order; an ended record is never
/// replaced by a running one.
pub fn coalesce(batch: Vec<Record>) -> Vec<Record> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(batch.len());
    let mut out: Vec<Record> = Vec::with_capacity(batch.len());
    for r in batch {
        match index.get(&r.session_id) {
            Some(&i) => {
                if r.done || !out[i].done {
                    out[i] = r;
                }
            }
            None => {
                index.insert(r.session_id.clone(), out.len());
                out.push(r);
            }
        }
    }
    out
}

/// Writes queued records to a backend.
pub struct Writer {
    backend: Arc<dyn Backend>,
    stats: Arc<Stats>,
}

impl Writer {
    /// A writer to `backend` that reports into `stats`.
    pub fn new(backend: Arc<dyn Backend>, stats: Arc<Stats>) -> Self {
        Self { backend, stats }
    }

    /// Writes batches until `closing`; then writes what is still queued and lets the backend
    /// finish (a spool tries a last replay).
    pub async fn run(self, mut rx: mpsc::Receiver<Record>, closing: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    linger(&mut rx, &mut buf).await;
                    self.handle(std::mem::take(&mut buf)).await;
                }
                _ = tick.tick() => self.backend.tick().await,
                () = closing.cancelled() => {
                    rx.close();
                    while rx.recv_many(&mut buf, BATCH).await > 0 {
                        self.handle(std::mem::take(&mut buf)).await;
                    }
                    break;
                }
            }
        }
        self.backend.finish().await;
    }

    /// Writes one batch, retrying every [`TICK`] until the backend takes it.
    async fn handle(&self, batch: Vec<Record>) {
        self.stats.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let batch = coalesce(batch);
        let mut tries = 0u32;
        loop {
            match self.backend.write(&batch).await {
                Ok(()) => {
                    *lock(&self.stats.last_error) = None;
                    return;
                }
                Err(e) => {
                    *lock(&self.stats.last_error) = Some(e.to_string());
                    tries += 1;
                    tracing::error!(error = %e, tries, records = batch.len(), "cannot write results; retrying");
                    tokio::time::sleep(TICK).await;
                }
            }
        }
    }
}

/// Waits up to [`LINGER`] for more records to fill the batch.
async fn linger(rx: &mut mpsc::Receiver<Record>, buf: &mut Vec<Record>) {
    let until = tokio::time::Instant::now() + LINGER;
    while buf.len() < BATCH {
        let room = BATCH - buf.len();
        match tokio::time::timeout_at(until, rx.recv_many(buf, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::Owner;
    use uuid::Uuid;

    fn rec(id: &str, done: bool) -> Record {
        let mut r = Record::started(
            super::super::Start {
                session: Uuid::nil(),
                task: "t",
                cluster_type: "c",
                path: "c/t",
                is_async: false,
                args: serde_json::Value::Null,
                command: String::new(),
            },
            &Owner::current(),
        );
        r.session_id = id.into();
        r.done = done;
        r
    }

    #[test]
    fn coalesce_keeps_the_end_of_each_session() {
        let out = coalesce(vec![
            rec("a", false),
            rec("b", false),
            rec("a", true),
            rec("a", false),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].session_id.as_str(), out[0].done), ("a", true));
        assert_eq!((out[1].session_id.as_str(), out[1].done), ("b", false));
    }
}
