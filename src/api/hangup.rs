//! Notices a client that hangs up while its sync call is still running.
//!
//! hyper does not read from an HTTP/1 connection while a handler runs, so a client that goes
//! away is not noticed until the answer is written, and the task would run on for nobody.
//! [`Connections::watch`] keeps a duplicate of every connection's socket, keyed by the peer
//! address; a sync handler looks its own up and [`hung_up`] checks it for `POLLRDHUP` (the peer
//! closed its side) a few times a second.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use poem::web::RemoteAddr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::logs::lock;

/// How often a running sync call checks its client.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The live connections, by peer address.
#[derive(Default)]
pub struct Connections {
    by_peer: Mutex<HashMap<SocketAddr, Arc<OwnedFd>>>,
}

impl Connections {
    /// The socket of the connection from `peer`, if it is still open.
    pub fn socket(&self, peer: &RemoteAddr) -> Option<Arc<OwnedFd>> {
        let addr = peer.as_socket_addr()?;
        lock(&self.by_peer).get(addr).cloned()
    }

    /// Prepares an accepted connection for serving and records it, so a sync call on it can
    /// notice its client hanging up; it leaves the record when the returned stream is dropped.
    pub fn watch(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) -> WatchedStream {
        let _ = stream.set_nodelay(true);
        match stream.as_fd().try_clone_to_owned() {
            Ok(dup) => {
                lock(&self.by_peer).insert(peer, Arc::new(dup));
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch a connection for hang-ups"),
        }
        WatchedStream {
            inner: stream,
            peer,
            connections: self.clone(),
        }
    }
}

/// Resolves once the peer of `socket` has closed the connection.
pub async fn hung_up(socket: Arc<OwnedFd>) {
    // The first check waits a period too: most sync calls are over before it, and then cost no
    // poll(2) at all.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // nix has no name for POLLRDHUP (Linux only), so the flag comes from libc. Only
        // RDHUP is asked for and HUP/ERR are always reported, so any ready event means gone
        // (nix cannot show `revents` holding a bit it has no name for).
        let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
        let mut fds = [PollFd::new(socket.as_fd(), rdhup)];
        if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return;
        }
    }
}

/// A connection that leaves [`Connections`] when it is dropped.
pub struct WatchedStream {
    inner: TcpStream,
    peer: SocketAddr,
    connections: Arc<Connections>,
}

impl Drop for WatchedStream {
    fn drop(&mut self) {
        lock(&self.connections.by_peer).remove(&self.peer);
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
