//! Prometheus metrics: the one registry of the process, the small API the rest of the service
//! calls when something happens ([`run_started`], [`run_ended`], [`reloaded`], [`auth_checked`]),
//! the HTTP middleware that counts requests by route template, and the scrape ([`render`]).
//!
//! Built on `prometheus-client`, the official Rust client. Label values are bounded: task names
//! come from the config, routes are templates (`/sync/:cluster_type/:name`), never raw paths or
//! arguments. Process metrics (CPU, memory, open files) are read from `/proc` with `procfs` at
//! each scrape.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use poem::PathPattern;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::http::RouteSet;
use crate::logs::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabel {
    task: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabel {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabel {
    route: String,
    outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn run_buckets() -> Histogram {
    // 10 ms to about 11 h.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

fn http_buckets() -> Histogram {
    // 100 µs to about 6.5 min.
    Histogram::new(exponential_buckets(0.0001, 4.0, 12))
}

struct Metrics {
    registry: Registry,
    runs_started: Family<TaskLabel, Counter>,
    runs_ended: Family<EndLabel, Counter>,
    run_duration: Histograms<TaskLabel>,
    runs_running: Gauge,
    run_events_dropped: Counter,
    log_records_dropped: Gauge,
    sessions_held: Gauge,
    http_requests: Family<HttpLabel, Counter>,
    http_duration: Histograms<RouteLabel>,
    reloads: Family<ResultLabel, Counter>,
    generation: Gauge,
    auth: Family<AuthLabel, Counter>,
    connections_closed: Family<ReasonLabel, Counter>,
    process: Process,
}

/// The service's own process figures, read from `/proc/self` at each scrape.
#[derive(Default)]
struct Process {
    cpu: Counter<f64, AtomicU64>,
    /// The CPU time already counted, as the counter only goes up by increments.
    cpu_seen: Mutex<f64>,
    resident: Gauge,
    virtual_bytes: Gauge,
    open_fds: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut r = Registry::default();
    let m = Metrics {
        runs_started: Family::default(),
        runs_ended: Family::default(),
        run_duration: Family::new_with_constructor(run_buckets),
        runs_running: Gauge::default(),
        run_events_dropped: Counter::default(),
        log_records_dropped: Gauge::default(),
        sessions_held: Gauge::default(),
        http_requests: Family::default(),
        http_duration: Family::new_with_constructor(http_buckets),
        reloads: Family::default(),
        generation: Gauge::default(),
        auth: Family::default(),
        connections_closed: Family::default(),
        process: Process::default(),
        registry: Registry::default(),
    };
    // One entry per metric: its name, the field it is read from, and its help text.
    macro_rules! register {
        ($($name:literal, $($field:ident).+: $help:literal;)*) => {
            $(r.register($name, $help, m.$($field).+.clone());)*
        };
    }
    register! {
        "cs_runs_started", runs_started:
            "Runs started, by task";
        "cs_runs_ended", runs_ended:
            "Runs ended, by task and outcome (ok, failed, killed, cancelled, shutdown, timed_out, replaced)";
        "cs_run_duration_seconds", run_duration:
            "How long runs took, by task";
        "cs_runs_running", runs_running:
            "Runs going now";
        "cs_run_events_dropped", run_events_dropped:
            "Run events a live view lost because it fell behind";
        "cs_log_records_dropped", log_records_dropped:
            "Task log records dropped because the log writer fell behind (since start)";
        "cs_sessions_held", sessions_held:
            "Async sessions kept in memory (running and finished within retention)";
        "cs_http_requests", http_requests:
            "HTTP requests answered, by route template, method and status";
        "cs_http_request_duration_seconds", http_duration:
            "Time to answer an HTTP request (to its headers), by route template";
        "cs_config_reloads", reloads:
            "Task config reloads, by result (ok, unchanged, rejected)";
        "cs_config_generation", generation:
            "Generation of the served task config (1 at startup, +1 per accepted reload)";
        "cs_auth_requests", auth:
            "Requests checked by authentication, by route template and outcome";
        "cs_connections_closed", connections_closed:
            "Connections the service closed or refused, by reason (header_timeout, keep_alive_timeout, evicted, refused)";
        "process_cpu_seconds", process.cpu:
            "User and system CPU time of the service";
        "process_resident_memory_bytes", process.resident:
            "Resident memory of the service";
        "process_virtual_memory_bytes", process.virtual_bytes:
            "Virtual memory of the service";
        "process_open_fds", process.open_fds:
            "Open file descriptors of the service";
    }
    Metrics { registry: r, ..m }
});

/// A run of `task` has started.
pub fn run_started(task: &str) {
    let m = &*METRICS;
    m.runs_started
        .get_or_create(&TaskLabel { task: task.into() })
        .inc();
    m.runs_running.inc();
}

/// A run of `task` has ended with `outcome` ([`crate::runner::RunResult::outcome`]).
pub fn run_ended(task: &str, outcome: &str, took: Duration) {
    let m = &*METRICS;
    m.runs_ended
        .get_or_create(&EndLabel {
            task: task.into(),
            outcome: outcome.into(),
        })
        .inc();
    m.run_duration
        .get_or_create(&TaskLabel { task: task.into() })
        .observe(took.as_secs_f64());
    m.runs_running.dec();
}

/// A live view of run events fell behind and lost `n` of them.
pub fn run_events_dropped(n: u64) {
    METRICS.run_events_dropped.inc_by(n);
}

/// A config reload ended with `result`: `ok`, `unchanged` or `rejected`.
pub fn reloaded(result: &str) {
    METRICS
        .reloads
        .get_or_create(&ResultLabel {
            result: result.into(),
        })
        .inc();
}

/// Authentication decided `outcome` for a request to `route` (a template).
pub fn auth_checked(route: &str, outcome: &str) {
    METRICS
        .auth
        .get_or_create(&AuthLabel {
            route: route.into(),
            outcome: outcome.into(),
        })
        .inc();
}

/// The service closed or refused a connection for `reason`
/// ([`crate::server::connections::Closed::label`]).
pub fn connection_closed(reason: &str) {
    METRICS
        .connections_closed
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc();
}

/// The values read at scrape time.
pub struct Snapshot {
    /// Sessions held in memory.
    pub sessions: usize,
    /// The served config's generation.
    pub generation: u64,
    /// Log records dropped so far because the log writer fell behind.
    pub log_records_dropped: u64,
}

/// The scrape in the OpenMetrics text format.
pub fn render(now: Snapshot) -> String {
    let m = &*METRICS;
    m.sessions_held
        .set(i64::try_from(now.sessions).unwrap_or(i64::MAX));
    m.generation
        .set(i64::try_from(now.generation).unwrap_or(i64::MAX));
    m.log_records_dropped
        .set(i64::try_from(now.log_records_dropped).unwrap_or(i64::MAX));
    read_process(m);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    out
}

/// CPU, memory and open files of this process, from `/proc/self`; left as they were if `/proc`
/// cannot be read.
fn read_process(m: &Metrics) {
    let Ok(me) = procfs::process::Process::myself() else {
        return;
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        let cpu = (stat.utime + stat.stime) as f64 / ticks;
        let mut seen = lock(&m.process.cpu_seen);
        if cpu > *seen {
            m.process.cpu.inc_by(cpu - *seen);
            *seen = cpu;
        }
        let rss = stat.rss.saturating_mul(procfs::page_size());
        m.process
            .resident
            .set(i64::try_from(rss).unwrap_or(i64::MAX));
        m.process
            .virtual_bytes
            .set(i64::try_from(stat.vsize).unwrap_or(i64::MAX));
    }
    if let Ok(n) = me.fd_count() {
        m.process.open_fds.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// The middleware counting every HTTP request by route template, method and status.
pub struct HttpMetrics {
    routes: &'static RouteSet,
}

impl HttpMetrics {
    /// Counts the requests to `routes`, labelled by their declared templates.
    pub fn new(routes: &'static RouteSet) -> Self {
        Self { routes }
    }
}

impl<E: Endpoint> Middleware<E> for HttpMetrics {
    type Output = HttpMetricsEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        HttpMetricsEndpoint {
            inner: ep,
            routes: self.routes,
        }
    }
}

/// An endpoint behind [`HttpMetrics`].
pub struct HttpMetricsEndpoint<E> {
    inner: E,
    routes: &'static RouteSet,
}

impl<E: Endpoint> Endpoint for HttpMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let method = match req.method().as_str() {
            m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
            _ => "other",
        }
        .to_string();
        // The router's template when it matched one; else the declared one (a request refused
        // before routing); else `unmatched`, never the raw path.
        let fallback = self
            .routes
            .template(req.uri().path())
            .unwrap_or("unmatched");
        let result = self.inner.call(req).await.map(IntoResponse::into_response);
        let (status, pattern) = match &result {
            Ok(resp) => (
                resp.status(),
                resp.data::<PathPattern>().map(|p| p.0.clone()),
            ),
            Err(e) => (e.status(), e.data::<PathPattern>().map(|p| p.0.clone())),
        };
        let route = pattern.as_deref().unwrap_or(fallback).to_string();
        let m = &*METRICS;
        m.http_duration
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        m.http_requests
            .get_or_create(&HttpLabel {
                route,
                method,
                status: status.as_u16().to_string(),
            })
            .inc();
        result
    }
}
