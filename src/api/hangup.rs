//! Notices a client that hangs up while its sync call is still running.
//!
//! The server (see [`crate::server`]) gives every connection a [`Connection`]: an id and a
//! duplicate of its socket, put into each request's extensions. A sync handler turns it into a
//! future with [`client_gone`], which checks the socket's own readiness a few times a second.
//!
//! # The rule
//!
//! TCP cannot tell a server, from what it has received, whether a client that sent FIN did
//! `shutdown(SHUT_WR)` (it has sent its request and still waits for the answer: some HTTP
//! clients and proxies do this) or `close()` (or was killed): both arrive as one FIN, which
//! `poll(2)` shows as `POLLRDHUP` and a read as EOF. Only a write tells them apart: a socket
//! that was closed answers new data with RST, a half-closed one takes it. So:
//!
//! - `POLLHUP` or `POLLERR` (the peer reset the connection, or it is closed both ways): gone,
//!   the run is cancelled.
//! - `POLLRDHUP` alone (FIN received): *maybe* gone. On an HTTP/1.1 request the connection is
//!   probed with an interim `HTTP/1.1 100 Continue` answer, which every HTTP/1.1 client must
//!   accept and skip before the final answer (RFC 9110 §15.2). A closed peer answers it with RST,
//!   so the next check (100 ms later) sees `POLLHUP`/`POLLERR` and cancels; a write that fails
//!   outright cancels at once. A half-closed peer just acknowledges it and its run goes on; the
//!   probe is repeated every second while the run lasts, so a client that half-closes and later
//!   goes away is still noticed within about a second. A client that never half-closes never sees
//!   a probe.
//! - HTTP/1.0 forbids 1xx answers, so an HTTP/1.0 request is never probed: a FIN alone never
//!   cancels it, only a reset does. (HTTP/2 has its own stream resets: hyper drops the handler,
//!   which cancels the run.)
//!
//! The probe is safe to write beside hyper: by the time a run starts the handler has read the
//! whole body and hyper writes nothing on the connection until the handler answers. hyper itself
//! is told to allow half-closed connections (`half_close`), or it would end the connection on
//! the EOF. Go's `net/http` instead treats the EOF as a disconnect (its background read cancels
//! the request's context), which is exactly the behaviour this module avoids.

use std::future::Future;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use poem::http::Version;
use poem::Request;
use tokio::time::{Instant, MissedTickBehavior};

/// How often a running sync call checks its client.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// How often a connection whose client sent FIN is probed again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The probe: an interim answer every HTTP/1.1 client skips.
pub const PROBE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One accepted connection, as the hang-up check sees it.
pub struct Connection {
    /// Counts connections from 1, for the log.
    id: u64,
    /// A duplicate of the connection's socket (the same open socket, another descriptor).
    socket: TcpStream,
}

/// What the socket says about its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Nothing received that says it is going.
    Open,
    /// It sent FIN: closed, or only half-closed.
    SentFin,
    /// Reset, or closed both ways: gone.
    Gone,
}

impl Connection {
    /// Prepares the connection `id` for hang-up checks; `None` (logged) if its socket cannot be
    /// duplicated, out of descriptors, say: its runs are then never cancelled by a hang-up.
    pub fn new(id: u64, stream: &tokio::net::TcpStream) -> Option<Arc<Self>> {
        match stream.as_fd().try_clone_to_owned() {
            Ok(dup) => Some(Arc::new(Self {
                id,
                socket: TcpStream::from(dup),
            })),
            Err(e) => {
                tracing::warn!(connection = id, error = %e, "cannot watch a connection for hang-ups");
                None
            }
        }
    }

    fn peer(&self) -> Peer {
        // `POLLHUP` and `POLLERR` are always reported; asking for nothing shows just them (nix
        // cannot show `revents` holding `POLLRDHUP`, a bit it has no name for).
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::empty())];
        if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return Peer::Gone;
        }
        let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
        let mut fds = [PollFd::new(self.socket.as_fd(), rdhup)];
        if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return Peer::SentFin;
        }
        Peer::Open
    }

    /// Writes the probe; `false` if the peer is certainly gone.
    fn probe(&self) -> bool {
        match (&self.socket).write(PROBE) {
            Ok(n) if n == PROBE.len() => true,
            Ok(n) => {
                // Cannot happen on a connection that has nothing else queued; if it did, the
                // answer would follow a broken interim one, so say so.
                tracing::warn!(
                    connection = self.id,
                    written = n,
                    "a hang-up probe was cut short"
                );
                true
            }
            // A full send buffer: the client reads nothing, but is there. Try again later.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        }
    }

    /// Resolves once the client is known to be gone, by the rule in the module documentation.
    async fn gone(self: Arc<Self>, may_probe: bool) {
        // The first check waits a period too: most sync calls are over before it, and then cost
        // no poll(2) at all.
        let mut tick = tokio::time::interval_at(Instant::now() + CHECK_EVERY, CHECK_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut probed: Option<Instant> = None;
        loop {
            tick.tick().await;
            match self.peer() {
                Peer::Open => {}
                Peer::Gone => break,
                Peer::SentFin if may_probe => {
                    if probed.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
                        probed = Some(Instant::now());
                        if !self.probe() {
                            break;
                        }
                    }
                }
                Peer::SentFin => {}
            }
        }
        tracing::debug!(connection = self.id, "the client hung up");
    }
}

/// Resolves once the client that sent `req` has gone away (never, if its connection is not
/// watched); see the module documentation for how that is decided.
pub fn client_gone(req: &Request) -> impl Future<Output = ()> + Send + 'static {
    let conn = req.data::<Arc<Connection>>().cloned();
    let may_probe = req.version() == Version::HTTP_11;
    async move {
        match conn {
            Some(conn) => conn.gone(may_probe).await,
            None => std::future::pending().await,
        }
    }
}
