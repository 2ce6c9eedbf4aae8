//! The shape of the running server: one accept loop that deals connections out in turn to a
//! fixed number of worker threads, each running its own single-threaded tokio runtime with its
//! own HTTP server, and the order in which all of it stops.
//!
//! Why not one multi-threaded runtime: a sync call is a request, a child process and its pipes,
//! and with a work-stealing runtime the events of one call (the request, the child's output,
//! its exit) were handled on whichever worker was free, so almost every call woke another
//! thread. Those wake-ups cost the service CPU, and the kernel charged part of them to the
//! children that caused them: at concurrency 1 a child cost about 100 µs more CPU under the
//! service than under the benchmark's floor (BENCHMARKS.md). Here a connection stays on one
//! worker, and so does every run started from it. Starting a child blocks the worker that starts
//! it until the child has called exec (the spawn is a vfork), which is why there are at least
//! two workers even on one core.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::api::hangup::{Connections, WatchedStream};
use crate::App;

/// How long in-flight requests may take to finish once shutdown has begun.
const REQUEST_GRACE: Duration = Duration::from_secs(5);

/// How long to wait before accepting again after `accept` failed (out of file descriptors, say),
/// so a persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The default number of workers: one per core, at least 2, so that one worker held by a slow
/// spawn never stops the service. Since spawning is cheap (BENCHMARKS.md, step 9) more workers
/// than cores only cost: on 2 cores, 2 workers served 2.5 % more calls per second than 4 at
/// concurrency 16 and 64, and the same at concurrency 1 (step 13).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// Serves `app` on `listener` with its configured number of worker threads until `shutdown`
/// resolves, then finishes the requests in flight, kills every run still going, waits for them
/// to be reaped and stops the workers.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    // At least one: the accept loop deals connections out modulo the pool's size.
    let workers = app.settings.workers.max(1);
    let local = LocalAddr(listener.local_addr()?.into());
    let connections = Arc::new(Connections::default());
    let stop_serving = CancellationToken::new();
    let exit = CancellationToken::new();
    let mut pool = Vec::with_capacity(workers);
    for i in 0..workers {
        pool.push(Worker::start(
            i,
            app.clone(),
            local.clone(),
            connections.clone(),
            stop_serving.clone(),
            exit.clone(),
        )?);
    }
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(app.sessions.sweep_interval());
            loop {
                tick.tick().await;
                let removed = app.sessions.sweep();
                if removed > 0 {
                    tracing::debug!(removed, "cleaned finished sessions past their retention");
                }
            }
        })
    };

    tokio::select! {
        () = accept_loop(&listener, &pool) => {}
        () = shutdown => {}
    }
    drop(listener);
    stop_serving.cancel();
    let mut result = Ok(());
    for worker in &mut pool {
        if let Some(done) = worker.served.take() {
            match done.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("a worker thread ended early")),
            }
        }
    }
    sweeper.abort();
    app.sessions.cancel_all();
    app.tracker.close();
    let limit = app.settings.kill_grace + Duration::from_secs(5);
    if tokio::time::timeout(limit, app.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some runs were still ending when the service stopped");
    }
    exit.cancel();
    for worker in pool {
        worker.join();
    }
    result
}

/// Accepts connections and hands them to the workers in turn; never returns.
async fn accept_loop(listener: &TcpListener, pool: &[Worker]) {
    let mut next = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // A tokio stream belongs to the runtime that registered it; the worker registers it
        // again with its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                continue;
            }
        };
        // A worker only goes away when the service stops, so a failed send drops one
        // connection of a stopping service.
        let _ = pool[next].connections.send((stream, peer));
        next = (next + 1) % pool.len();
    }
}

/// One worker thread and the ways to talk to it.
struct Worker {
    connections: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Resolves when the worker's HTTP server has stopped.
    served: Option<oneshot::Receiver<io::Result<()>>>,
    thread: JoinHandle<()>,
}

impl Worker {
    fn start(
        index: usize,
        app: Arc<App>,
        local: LocalAddr,
        watched: Arc<Connections>,
        stop_serving: CancellationToken,
        exit: CancellationToken,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (served_tx, served_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("cs-worker-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let acceptor = ChannelAcceptor {
                        incoming: rx,
                        local,
                        watched: watched.clone(),
                    };
                    let endpoint = api::build(app, watched);
                    let served = poem::Server::new_with_acceptor(acceptor)
                        .run_with_graceful_shutdown(
                            endpoint,
                            stop_serving.cancelled_owned(),
                            Some(REQUEST_GRACE),
                        )
                        .await;
                    let _ = served_tx.send(served);
                    // Runs started on this worker (async sessions, cancelled sync calls) are
                    // driven by this runtime: keep it going until they are all over.
                    exit.cancelled().await;
                });
            })?;
        Ok(Self {
            connections: tx,
            served: Some(served_rx),
            thread,
        })
    }

    fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("a worker thread panicked");
        }
    }
}

/// Hands poem the connections the accept loop dealt to one worker.
struct ChannelAcceptor {
    incoming: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    local: LocalAddr,
    watched: Arc<Connections>,
}

impl Acceptor for ChannelAcceptor {
    type Io = WatchedStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![self.local.clone()]
    }

    async fn accept(
        &mut self,
    ) -> io::Result<(
        WatchedStream,
        LocalAddr,
        RemoteAddr,
        poem::http::uri::Scheme,
    )> {
        loop {
            // Once the accept loop is gone no connection comes again; poem stops this acceptor
            // through its shutdown signal, so wait for that instead of failing.
            let Some((stream, peer)) = self.incoming.recv().await else {
                std::future::pending::<()>().await;
                continue;
            };
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot serve a connection");
                    continue;
                }
            };
            return Ok((
                self.watched.watch(stream, peer),
                self.local.clone(),
                RemoteAddr(peer.into()),
                poem::http::uri::Scheme::HTTP,
            ));
        }
    }
}
