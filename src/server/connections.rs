//! The connections the service holds: which are idle and which are busy with a request, closing
//! an idle one when its time is up, and making room at `--max-connections` by closing the one
//! idle longest.
//!
//! Why this is not left to hyper: hyper-util's auto builder (HTTP/1 or h2c) waits for a
//! connection's first bytes to pick the protocol before hyper's HTTP/1 header read timer runs, so
//! a client that connects and sends nothing was never closed; hyper's timer also runs between
//! kept-alive requests, so it cannot give them a longer keep-alive time; and HTTP/2 has neither.
//! A client holding connections could then keep every new one out. So hyper's timer is off and
//! each connection carries a small state, shared by its task and its requests:
//! - idle since it was accepted, until the headers of a first request are complete;
//! - busy while any of its requests is in flight (from complete headers until the response body
//!   has been handed to the socket; several at once on HTTP/2);
//! - idle again since its last response.
//!
//! An idle connection is closed once it has been idle for `--header-read-timeout` (no request
//! yet, whether it sent nothing or half its headers) or `--keep-alive-timeout` (after a request;
//! but once bytes of a next request arrive, which [`super::watched::Watched`] reports, its
//! headers must be complete within `--header-read-timeout` of them). A busy connection is never
//! closed here. At `--max-connections`, a new connection closes the connection idle longest to
//! make room; only when every held connection is busy is the new one refused with a 503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::logs::lock;

/// Why the service closed or refused a connection (the `reason` label of
/// `cs_connections_closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No complete request within `--header-read-timeout` of the accept.
    HeaderTimeout,
    /// Idle for `--keep-alive-timeout` after its last response.
    KeepAliveTimeout,
    /// Idle longest when a new connection needed its place at `--max-connections`.
    Evicted,
    /// Answered 503 at `--max-connections`: every held connection was busy.
    Refused,
}

impl Closed {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::KeepAliveTimeout => "keep_alive_timeout",
            Self::Evicted => "evicted",
            Self::Refused => "refused",
        }
    }
}

/// The limits connections are held to.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Most connections held at once (`--max-connections`).
    pub max: usize,
    /// How long a new connection may take to send its first request's headers.
    pub header_timeout: Duration,
    /// How long a connection may stay idle after a response.
    pub keep_alive: Duration,
}

/// Every connection the service holds.
pub struct Connections {
    rules: Rules,
    held: Mutex<HashMap<u64, Arc<Tracked>>>,
    next_id: AtomicU64,
}

/// One connection's shared state.
pub struct Tracked {
    id: u64,
    state: Mutex<State>,
    /// Woken when the connection turns busy or idle, so its deadline is recomputed.
    changed: Notify,
    /// Cancelled when another connection took this one's place.
    evicted: CancellationToken,
}

struct State {
    /// Requests in flight.
    busy: usize,
    /// When the connection last became idle (its accept, or its last response).
    idle_since: Instant,
    /// Whether a request was ever served (picks the keep-alive timeout over the header one).
    served: bool,
    /// Decided to close: no request may start on it any more.
    closing: bool,
    /// When the first bytes arrived since it became idle after a request.
    reading_since: Option<Instant>,
}

impl State {
    /// When the connection is to be closed if it stays as it is, and why; `None` while busy.
    fn deadline(&self, rules: &Rules) -> Option<(Instant, Closed)> {
        (self.busy == 0).then(|| match (self.served, self.reading_since) {
            (false, _) => (
                self.idle_since + rules.header_timeout,
                Closed::HeaderTimeout,
            ),
            (true, Some(first)) => (first + rules.header_timeout, Closed::HeaderTimeout),
            (true, None) => (self.idle_since + rules.keep_alive, Closed::KeepAliveTimeout),
        })
    }
}

/// A connection's place among those held; dropping it gives the place back.
pub struct Held {
    connections: Arc<Connections>,
    tracked: Arc<Tracked>,
}

/// A request in flight on a connection: the connection is busy until every one is dropped.
pub struct Busy(Arc<Tracked>);

impl Connections {
    /// No connection held yet.
    pub fn new(rules: Rules) -> Arc<Self> {
        Arc::new(Self {
            rules,
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// A place for a new connection: a free one, or the one of the connection idle longest,
    /// which is closed. `None` when every held connection is busy (answer with [`refuse`]).
    ///
    /// Idle longest is the fair pick: a new connection whose request is on its way is idle
    /// too until its headers are read, and the oldest idle ones, a flood of silent connections or
    /// a kept-alive connection unused for long, go before it.
    pub fn admit(self: &Arc<Self>) -> Option<Held> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let tracked = Arc::new(Tracked {
            id,
            state: Mutex::new(State {
                busy: 0,
                idle_since: Instant::now(),
                served: false,
                closing: false,
                reading_since: None,
            }),
            changed: Notify::new(),
            evicted: CancellationToken::new(),
        });
        let mut held = lock(&self.held);
        if held.len() >= self.rules.max {
            let victim = held
                .values()
                .filter_map(|t| {
                    let s = lock(&t.state);
                    (s.busy == 0 && !s.closing).then_some((s.idle_since, t.id))
                })
                .min()
                .map(|(_, id)| id);
            // Marked closing under its lock, so no request starts on it after this.
            let victim = victim.and_then(|id| held.remove(&id))?;
            lock(&victim.state).closing = true;
            victim.evicted.cancel();
        }
        held.insert(id, tracked.clone());
        Some(Held {
            connections: self.clone(),
            tracked,
        })
    }
}

impl Held {
    /// A number naming the connection for as long as the service runs.
    pub fn id(&self) -> u64 {
        self.tracked.id
    }

    /// The state its requests mark busy with [`Tracked::begin`].
    pub fn tracked(&self) -> Arc<Tracked> {
        self.tracked.clone()
    }

    /// Resolves when the connection must be closed: idle past its timeout, or evicted. Never
    /// while a request is in flight.
    pub async fn idle_out(&self) -> Closed {
        let rules = self.connections.rules;
        let t = &self.tracked;
        loop {
            // Created before the state is read: a change made after the read still wakes it.
            let changed = t.changed.notified();
            let deadline = lock(&t.state).deadline(&rules);
            let expired = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = t.evicted.cancelled() => return Closed::Evicted,
                () = changed => {}
                () = expired => {
                    let mut s = lock(&t.state);
                    // A request may have begun (or ended) since the deadline was computed.
                    if let Some((at, reason)) = s.deadline(&rules) {
                        if at <= Instant::now() && !s.closing {
                            s.closing = true;
                            return reason;
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        lock(&self.connections.held).remove(&self.tracked.id);
    }
}

impl Tracked {
    /// A request's headers are complete: the connection is busy until the returned guard is
    /// dropped. `None` when the connection is already being closed; the request must then not
    /// be started (the client sees the connection close and may retry).
    pub fn begin(self: &Arc<Self>) -> Option<Busy> {
        let mut s = lock(&self.state);
        if s.closing {
            return None;
        }
        s.busy += 1;
        s.reading_since = None;
        drop(s);
        self.changed.notify_waiters();
        Some(Busy(self.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = lock(&self.0.state);
        s.busy -= 1;
        if s.busy == 0 {
            s.idle_since = Instant::now();
            s.served = true;
            s.reading_since = None;
        }
        drop(s);
        self.0.changed.notify_waiters();
    }
}

impl Tracked {
    /// Bytes arrived: if the connection is idle after a request, its next request has begun and
    /// the header read timeout runs from now.
    pub(super) fn bytes_arrived(&self) {
        let mut s = lock(&self.state);
        if s.busy == 0 && s.served && s.reading_since.is_none() {
            s.reading_since = Some(Instant::now());
            drop(s);
            self.changed.notify_waiters();
        }
    }
}

/// Answers a connection over `--max-connections` with a 503 envelope and closes it.
pub async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = r#"{"code":1,"data":null,"msg":"too many connections busy with requests (--max-connections); try again later"}"#;
    tracing::warn!("connection refused: --max-connections are busy with requests");
    crate::metrics::connection_closed(Closed::Refused.label());
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        BODY.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(BODY.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_millis(200);
    const KEEP_ALIVE: Duration = Duration::from_millis(400);

    fn rules(max: usize) -> Rules {
        Rules {
            max,
            header_timeout: HEADER,
            keep_alive: KEEP_ALIVE,
        }
    }

    #[tokio::test]
    async fn at_the_limit_the_connection_idle_longest_makes_room_and_busy_ones_never_do() {
        let c = Connections::new(Rules {
            header_timeout: Duration::from_secs(3600),
            ..rules(2)
        });
        let first = c.admit().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = c.admit().unwrap();
        let busy = second.tracked().begin().unwrap();
        // The first is idle longest: it makes room, and no request starts on it any more.
        let third = c.admit().unwrap();
        assert_eq!(first.idle_out().await, Closed::Evicted);
        assert!(first.tracked().begin().is_none());
        drop(first);
        // Now one is busy and one idle: the idle one goes.
        let fourth = c.admit().unwrap();
        assert_eq!(third.idle_out().await, Closed::Evicted);
        drop(third);
        let _in_fourth = fourth.tracked().begin().unwrap();
        // Both busy: refused.
        assert!(c.admit().is_none());
        drop(busy);
        assert!(c.admit().is_some());
    }

    #[tokio::test]
    async fn an_idle_connection_closes_at_its_timeout_and_a_busy_one_never() {
        let c = Connections::new(rules(10));
        let fresh = c.admit().unwrap();
        let began = Instant::now();
        assert_eq!(fresh.idle_out().await, Closed::HeaderTimeout);
        assert!(began.elapsed() >= HEADER, "{:?}", began.elapsed());

        let served = c.admit().unwrap();
        let busy = served.tracked().begin().unwrap();
        let watch = tokio::time::timeout(KEEP_ALIVE * 3, served.idle_out()).await;
        assert!(watch.is_err(), "a busy connection was closed");
        drop(busy);
        let began = Instant::now();
        assert_eq!(served.idle_out().await, Closed::KeepAliveTimeout);
        assert!(began.elapsed() >= KEEP_ALIVE, "{:?}", began.elapsed());
    }
}
