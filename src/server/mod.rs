//! The shape of the running server: an accept loop on tokio's multi-threaded runtime, one task
//! per connection served by hyper with the poem application, and the order in which all of it
//! stops.
//!
//! Why one work-stealing runtime: a thread that blocks (a spawn until the child has called exec,
//! a slow disk) only holds up the task on it, and the runtime moves every other connection and
//! run to a free thread. The service used to deal connections to per-thread single-threaded
//! runtimes to save cross-thread wake-ups, and then one blocked thread stalled every connection
//! and run pinned to it; the paired A/B in BENCHMARKS.md found no throughput worth that.
//!
//! Why hyper is driven here rather than by `poem::Server`: a client may half-close its socket
//! after sending a request and still wait for the answer, and hyper ends such a connection on
//! the EOF unless it is told to allow half-closed connections, which `poem::Server` does not
//! expose. This is the same connection setup `poem::Server` makes (hyper-util's auto builder, so
//! HTTP/1.1 and h2c both work), plus `half_close` and a [`hangup::Connection`] in every request.
//! Which connections are held, and when an idle one is closed, is [`connections`]' business.
//!
//! Shutdown goes in stages. On the first signal `/readyz` answers 503 saying the service is
//! draining, while runs are still started for `--drain-delay`, so that a load balancer checking
//! readiness stops sending new calls before any is refused; then run control refuses new runs
//! (503 with `Retry-After`) and gives the active ones their time; then the listener closes and
//! the connections finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::api::hangup;
use crate::App;

pub mod connections;
pub mod watched;

use connections::{Connections, Held, Rules};
use watched::{Guarded, Watched};

/// How long in-flight requests may take to finish once shutdown has begun.
const REQUEST_GRACE: Duration = Duration::from_secs(5);

/// How long to wait before accepting again after `accept` failed (out of file descriptors, say),
/// so a persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, gives the requests
/// in flight [`REQUEST_GRACE`] to finish (a sync call still running after it is cancelled with
/// its connection), kills every run still going and waits for them to be reaped.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let local = LocalAddr(listener.local_addr()?.into());
    let endpoint = Arc::new(api::build(app.clone()).map_to_response());
    let connections = TaskTracker::new();
    // Asks every connection to finish its request in flight and close.
    let stop_serving = CancellationToken::new();
    // Drops every connection still open after the grace period (which cancels its sync run).
    let drop_connections = CancellationToken::new();
    let sweeper = tokio::spawn(sweep_sessions(app.clone()));

    // On the signal, readiness fails for --drain-delay while runs still start; then new runs
    // are refused (503) while the active ones get their time to finish. The accept loop goes on
    // until they are done or have been asked to stop.
    let shutdown = async {
        shutdown.await;
        announce_drain(&app).await;
        app.runs.drain().await;
    };
    tokio::pin!(shutdown);
    let limits = &app.settings.request_limits;
    let held = Connections::new(Rules {
        max: limits.max_connections,
        header_timeout: limits.header_read_timeout,
        keep_alive: limits.keep_alive_timeout,
    });
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Some(place) = held.admit() else {
            connections.spawn(connections::refuse(stream));
            continue;
        };
        let conn = Served {
            endpoint: endpoint.clone(),
            local: local.clone(),
            remote: RemoteAddr(peer.into()),
            watched: hangup::Connection::new(place.id(), &stream),
            place,
        };
        connections.spawn(conn.serve(stream, stop_serving.clone(), drop_connections.clone()));
    }
    drop(listener);
    stop_serving.cancel();
    connections.close();
    if tokio::time::timeout(REQUEST_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the grace period are cancelled");
        drop_connections.cancel();
        connections.wait().await;
    }
    sweeper.abort();
    app.runs.end_all().await;
    Ok(())
}

/// Removes finished sessions past their retention, for as long as the service serves.
async fn sweep_sessions(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.runs.sweep_interval());
    loop {
        tick.tick().await;
        let removed = app.runs.sweep_sessions();
        if removed > 0 {
            tracing::debug!(removed, "cleaned finished sessions past their retention");
        }
    }
}

/// The first stage of shutdown: `/readyz` answers 503 saying that the service is draining,
/// while runs are still started for `--drain-delay` so that a load balancer checking readiness
/// stops sending calls before any is refused. A second signal ends the wait at once.
async fn announce_drain(app: &App) {
    let delay = app.settings.drain_delay;
    if !delay.is_zero() {
        let delay = humantime::format_duration(delay);
        tracing::info!("draining: /readyz fails, new runs are still started for {delay}");
        app.readiness.set_draining(format!(
            "draining for shutdown: new runs are still started for {delay}, then refused"
        ));
        tokio::select! {
            () = tokio::time::sleep(app.settings.drain_delay) => {}
            () = app.runs.hurried() => {}
        }
    }
    app.readiness.set_draining(
        "draining for shutdown: new runs are refused; the active ones are finishing".into(),
    );
}

/// One connection and what its requests need to know about it.
struct Served<E> {
    endpoint: Arc<E>,
    local: LocalAddr,
    remote: RemoteAddr,
    watched: Option<Arc<hangup::Connection>>,
    /// Its place among the connections held (`--max-connections`), and whether it is busy.
    place: Held,
}

impl<E: Endpoint<Output = poem::Response> + 'static> Served<E> {
    async fn serve(self, stream: TcpStream, stop: CancellationToken, drop_now: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let Self {
            endpoint,
            local,
            remote,
            watched,
            place,
        } = self;
        let tracked = place.tracked();
        let service = hyper::service::service_fn(move |mut req: poem::http::Request<Incoming>| {
            // The headers are complete: the connection is busy until the response is sent.
            let busy = tracked.begin();
            let endpoint = endpoint.clone();
            if let Some(watched) = &watched {
                req.extensions_mut().insert(watched.clone());
            }
            let req = poem::Request::from((req, local.clone(), remote.clone(), Scheme::HTTP));
            async move {
                let resp = match busy {
                    Some(_) => endpoint.get_response(req).await,
                    // Being closed for idleness as the request came: it is not started, and
                    // the connection closes under it, which a client may safely retry.
                    None => poem::Response::builder()
                        .status(poem::http::StatusCode::SERVICE_UNAVAILABLE)
                        .header("connection", "close")
                        .finish(),
                };
                let resp = poem::http::Response::from(resp).map(|body| Guarded::new(body, busy));
                Ok::<_, Infallible>(resp)
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that half-closes after its request still gets its answer; see `hangup`.
        builder.http1().half_close(true);
        // `connections` times headers out from the accept and after a response, for HTTP/1 and
        // HTTP/2 alike; hyper's HTTP/1 timer would also end a kept-alive connection early.
        builder.http1().header_read_timeout(None);
        let io = TokioIo::new(Watched::new(stream, &place));
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            why = place.idle_out() => {
                // Idle: no request is in flight, so dropping the connection loses nothing.
                crate::metrics::connection_closed(why.label());
                tracing::debug!(reason = why.label(), id = place.id(), "connection closed");
                return;
            }
            () = stop.cancelled() => {}
            () = drop_now.cancelled() => return,
        }
        conn.as_mut().graceful_shutdown();
        tokio::select! {
            _ = conn => {}
            () = drop_now.cancelled() => {}
        }
    }
}
