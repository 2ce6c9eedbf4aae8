//! Run lifecycle events: what a run publishes (started, output, ended) and the bus that carries
//! them to whoever watches runs.
//!
//! Two kinds of subscriber, as in tokio's `broadcast` and vector's topology:
//! - [`Observer`]s are registered once at startup (the task log, the metrics, the result store,
//!   the session view). Each is told every event in order, on the run's own task, so it must not
//!   block: it records in memory or hands the work to its own queue (the result store has a queue
//!   and a spool, so its records are never dropped).
//! - Live views (the dashboard, an event stream) [`Bus::subscribe`] at any time and read at their
//!   own pace from a bounded channel. One that falls behind loses the oldest events; every lost
//!   event is counted in `cs_run_events_dropped_total`. A run never waits for a live view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::logs::TaskLog;
use crate::runner::RunResult;
use crate::table::{Task, TaskKind};

/// How many events a live view may fall behind before it loses the oldest ones.
const LIVE_CAPACITY: usize = 1024;

/// How a run was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `POST /sync/...`: the caller waits for the end.
    Sync,
    /// `POST /async/...`: a session the caller polls.
    Async,
}

/// What every event of a run carries: which run, of which task, with what.
pub struct RunInfo {
    /// The run's session id.
    pub id: Uuid,
    /// The task as it was when the run was admitted (a reload does not change a running run).
    pub task: Arc<Task>,
    /// Sync or async.
    pub mode: Mode,
    /// The POSTed arguments (a list for external tasks, an object for built-in ones).
    pub args: Value,
    /// The command line of an external task, or `builtin /<path>`.
    pub command: String,
    /// When the run was admitted, as sessions and records show it.
    pub start_at: DateTime<Local>,
    /// The same moment on the monotonic clock, for durations.
    pub started: Instant,
    /// The task's log.
    pub log: Arc<TaskLog>,
}

impl RunInfo {
    /// Whether the run is an async session.
    pub fn is_async(&self) -> bool {
        self.mode == Mode::Async
    }

    /// Whether the task is built in (written in Rust).
    pub fn is_builtin(&self) -> bool {
        matches!(self.task.kind, TaskKind::Builtin(_))
    }
}

/// One thing that happened to a run.
#[derive(Clone)]
pub enum RunEvent {
    /// The run starts now (after any run it replaces has ended).
    Started(Arc<RunInfo>),
    /// The run printed a new latest stdout line (a built-in task: logged a line).
    Output {
        /// The run.
        id: Uuid,
        /// The line, without its newline.
        line: Arc<str>,
    },
    /// The run is over; its result is final.
    Ended {
        /// The run.
        info: Arc<RunInfo>,
        /// How it ended.
        result: Arc<RunResult>,
        /// How long it took from its start.
        took: Duration,
        /// When it ended, as its session shows it.
        end_at: DateTime<Local>,
    },
}

/// Told every event in order; registered once at startup. Must not block (see the module doc).
pub trait Observer: Send + Sync {
    /// One event of one run.
    fn observe(&self, event: &RunEvent);
}

/// Carries every run's events to the observers and to the live views.
pub struct Bus {
    observers: Vec<Box<dyn Observer>>,
    live: broadcast::Sender<RunEvent>,
}

impl Bus {
    /// A bus that tells `observers`, in this order, every event.
    pub fn new(observers: Vec<Box<dyn Observer>>) -> Self {
        Self {
            observers,
            live: broadcast::Sender::new(LIVE_CAPACITY),
        }
    }

    /// Tells every observer, then every live view, about `event`.
    pub fn publish(&self, event: RunEvent) {
        for observer in &self.observers {
            observer.observe(&event);
        }
        if self.live.receiver_count() > 0 {
            // Fails only when the last view left in between: nobody to tell.
            let _ = self.live.send(event);
        }
    }

    /// Whether any live view listens (output lines are published only then).
    pub fn has_live_views(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// A live view of every run's events from now on.
    pub fn subscribe(&self) -> LiveEvents {
        LiveEvents(self.live.subscribe())
    }
}

/// A live view's events; what it missed by falling behind is counted, not waited for.
pub struct LiveEvents(broadcast::Receiver<RunEvent>);

impl LiveEvents {
    /// The next event; `None` once the service is shutting down.
    pub async fn next(&mut self) -> Option<RunEvent> {
        loop {
            match self.0.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    crate::metrics::run_events_dropped(lost);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the ids of the events it is told, in order.
    #[derive(Default)]
    struct Seen(Arc<Mutex<Vec<Uuid>>>);

    impl Observer for Seen {
        fn observe(&self, event: &RunEvent) {
            if let RunEvent::Output { id, .. } = event {
                self.0.lock().unwrap().push(*id);
            }
        }
    }

    fn output(n: u128) -> RunEvent {
        RunEvent::Output {
            id: Uuid::from_u128(n),
            line: Arc::from("line"),
        }
    }

    fn dropped_so_far() -> f64 {
        let scrape = crate::metrics::render(crate::metrics::Snapshot {
            sessions: 0,
            generation: 0,
            log_records_dropped: 0,
        });
        scrape
            .lines()
            .find_map(|l| l.strip_prefix("cs_run_events_dropped_total "))
            .and_then(|v| v.parse().ok())
            .expect("the counter is in the scrape")
    }

    #[tokio::test]
    async fn observers_see_every_event_and_a_lagging_view_counts_what_it_lost() {
        let seen = Seen::default();
        let ids = seen.0.clone();
        let bus = Bus::new(vec![Box::new(seen)]);
        let before = dropped_so_far();
        let mut view = bus.subscribe();
        let total = LIVE_CAPACITY as u128 + 10;
        for n in 0..total {
            bus.publish(output(n));
        }
        let expected: Vec<Uuid> = (0..total).map(Uuid::from_u128).collect();
        assert_eq!(
            *ids.lock().unwrap(),
            expected,
            "an observer missed or reordered events"
        );
        // The view fell 10 events behind its capacity: it goes on from the oldest it still has,
        // and the 10 it lost are counted.
        let Some(RunEvent::Output { id, .. }) = view.next().await else {
            panic!("the view has no event")
        };
        assert_eq!(id, Uuid::from_u128(10));
        assert!(dropped_so_far() - before >= 10.0);
        drop(bus);
        for _ in 11..total {
            assert!(view.next().await.is_some());
        }
        assert!(
            view.next().await.is_none(),
            "the view goes on after the bus is gone"
        );
    }
}
