//! The shape of the running server: an accept loop on tokio's multi-threaded runtime, one task
//! per connection served by hyper with the poem application, and the order in which all of it
//! stops.
//!
//! Why one work-stealing runtime: a thread that blocks (a spawn until the child has called exec,
//! a slow disk) only holds up the task on it, and the runtime moves every other connection and
//! run to a free thread. The service used to deal connections to per-thread single-threaded
//! runtimes to save cross-thread wake-ups, and then one blocked thread stalled every connection
//! and run pinned to it; measured, the per-thread runtimes gained no throughput worth that
//! (BENCHMARKS.md).
//!
//! Why hyper is driven here rather than by `poem::Server`: a client may half-close its socket
//! after sending a request and still wait for the answer, and hyper ends such a connection on
//! the EOF unless it is told to allow half-closed connections, which `poem::Server` does not
//! expose. This is the same connection setup `poem::Server` makes (hyper-util's auto builder, so
//! HTTP/1.1 and h2c both work), plus `half_close` and a [`hangup::Connection`] in every request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(app.runs.sweep_interval());
            loop {
                tick.tick().await;
                let removed = app.runs.sweep_sessions();
                if removed > 0 {
                    tracing::debug!(removed, "cleaned finished sessions past their retention");
                }
            }
        })
    };

    // On the signal, new runs are refused (503) while the active ones get their time to finish;
    // the accept loop goes on until they are done or have been asked to stop.
    let shutdown = async {
        shutdown.await;
        app.runs.drain().await;
    };
    tokio::pin!(shutdown);
    let mut next_id = 0u64;
    let open = Arc::new(tokio::sync::Semaphore::new(
        app.settings.request_limits.max_connections,
    ));
    let header_timeout = app.settings.request_limits.header_read_timeout;
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
        let Ok(permit) = open.clone().try_acquire_owned() else {
            connections.spawn(refuse_connection(stream));
            continue;
        };
        next_id += 1;
        let conn = Served {
            endpoint: endpoint.clone(),
            local: local.clone(),
            remote: RemoteAddr(peer.into()),
            watched: hangup::Connection::new(next_id, &stream),
            header_timeout,
            _permit: permit,
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

/// One connection and what its requests need to know about it.
struct Served<E> {
    endpoint: Arc<E>,
    local: LocalAddr,
    remote: RemoteAddr,
    watched: Option<Arc<hangup::Connection>>,
    header_timeout: Duration,
    /// Held while the connection is open (`--max-connections`).
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Answers a connection over `--max-connections` with a 503 envelope and closes it.
async fn refuse_connection(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = r#"{"code":1,"data":null,"msg":"too many open connections (--max-connections); try again later"}"#;
    tracing::warn!("connection refused: --max-connections reached");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        BODY.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(BODY.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl<E: Endpoint<Output = poem::Response> + 'static> Served<E> {
    async fn serve(self, stream: TcpStream, stop: CancellationToken, drop_now: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let Self {
            endpoint,
            local,
            remote,
            watched,
            header_timeout,
            _permit,
        } = self;
        let service = hyper::service::service_fn(move |mut req: poem::http::Request<Incoming>| {
            let endpoint = endpoint.clone();
            if let Some(watched) = &watched {
                req.extensions_mut().insert(watched.clone());
            }
            let req = poem::Request::from((req, local.clone(), remote.clone(), Scheme::HTTP));
            async move {
                let resp = endpoint.get_response(req).await;
                Ok::<_, Infallible>(poem::http::Response::from(resp))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that half-closes after its request still gets its answer; see `hangup`.
        builder.http1().half_close(true);
        // A client that sends its headers slowly cannot hold the connection (--header-read-timeout).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
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
