//! Load generator and "floor" program for bench/run.py.
//!
//! Three modes, each printing one JSON line with `requests`, `errors`, `seconds`, `rps`,
//! `p50_ms`, `p99_ms` (and `first_error` when something failed):
//!
//! - `http URL --body B [--expect S]`: POSTs `B` to `URL` from `--concurrency` workers, each on its
//!   own keep-alive connection, for `--duration` seconds. A request counts as an error unless the
//!   status is 200 and the body contains `S`.
//! - `async SUBMIT_URL QUERY_URL --body B`: each worker submits a session, then polls
//!   `QUERY_URL` every `--poll-ms` until the session is done; one "request" is the whole cycle.
//! - `spawn -- PROG ARGS...`: the floor. `--concurrency` threads spawn `PROG ARGS` in a tight loop
//!   (stdin null, stdout and stderr piped and read to the end, own process group, reaped): the
//!   most calls per second any service that runs this command could answer on this machine.
//!
//! Every mode also reports `self_cpu_us` and `children_cpu_us`, the CPU time (user + system) it and
//! its reaped children used: for the floor that is the cost of spawning and of the command itself.
//!
//! The HTTP modes run on a current-thread runtime: the generator shares the CPU with the server
//! and its children, so it should use as little of it as it can.

use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

struct Opts {
    mode: String,
    urls: Vec<String>,
    body: String,
    expect: String,
    concurrency: usize,
    duration: Duration,
    poll: Duration,
    command: Vec<String>,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or("usage: loadgen http|async|spawn ...")?;
    let mut o = Opts {
        mode,
        urls: Vec::new(),
        body: String::new(),
        expect: String::new(),
        concurrency: 1,
        duration: Duration::from_secs(3),
        poll: Duration::from_millis(1),
        command: Vec::new(),
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--body" => o.body = value("--body")?,
            "--expect" => o.expect = value("--expect")?,
            "--concurrency" => {
                o.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--duration" => {
                let s: f64 = value("--duration")?
                    .parse()
                    .map_err(|e| format!("--duration: {e}"))?;
                o.duration = Duration::from_secs_f64(s);
            }
            "--poll-ms" => {
                let ms: u64 = value("--poll-ms")?
                    .parse()
                    .map_err(|e| format!("--poll-ms: {e}"))?;
                o.poll = Duration::from_millis(ms);
            }
            "--" => {
                o.command = args.by_ref().collect();
            }
            other if other.starts_with("--") => return Err(format!("unknown flag {other}")),
            other => o.urls.push(other.to_string()),
        }
    }
    if o.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    Ok(o)
}

/// What one worker measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn report(mut self, seconds: f64, cpu: Cpu) -> String {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            f64::from(self.latencies_us[i]) / 1000.0
        };
        let n = self.latencies_us.len();
        let mut v = serde_json::json!({
            "requests": n,
            "errors": self.errors,
            "seconds": seconds,
            "rps": n as f64 / seconds,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        });
        v["self_cpu_us"] = Value::from(cpu.self_us);
        v["children_cpu_us"] = Value::from(cpu.children_us);
        if let Some(e) = self.first_error {
            v["first_error"] = Value::from(e);
        }
        v.to_string()
    }
}

/// CPU time (user + system) this program used, and its reaped children used, in microseconds.
#[derive(Clone, Copy)]
struct Cpu {
    self_us: u64,
    children_us: u64,
}

impl Cpu {
    fn now() -> Self {
        let used = |who| {
            // SAFETY: getrusage only writes into the struct we hand it.
            let mut r: libc::rusage = unsafe { std::mem::zeroed() };
            if unsafe { libc::getrusage(who, &mut r) } != 0 {
                return 0;
            }
            let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
            us(r.ru_utime) + us(r.ru_stime)
        };
        Self {
            self_us: used(libc::RUSAGE_SELF),
            children_us: used(libc::RUSAGE_CHILDREN),
        }
    }

    fn since(self, start: Cpu) -> Cpu {
        Cpu {
            self_us: self.self_us - start.self_us,
            children_us: self.children_us - start.children_us,
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One keep-alive HTTP/1.1 connection, reopened after a failure.
struct Conn {
    authority: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(url: &str) -> Result<Self, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
        let authority = uri
            .authority()
            .ok_or(format!("no host in {url}"))?
            .to_string();
        Ok(Self {
            authority,
            sender: None,
        })
    }

    async fn post(&mut self, url: &str, body: &str) -> Result<(u16, Bytes), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| format!("connect {}: {e}", self.authority))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::task::spawn_local(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        let req = hyper::Request::post(url)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((status, bytes))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

fn check(status: u16, body: &[u8], expect: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    if status != 200 || !text.contains(expect) {
        return Err(format!(
            "status {status}, body {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    Ok(())
}

async fn http_worker(o: &Opts, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    let url = &o.urls[0];
    let mut conn = match Conn::new(url) {
        Ok(c) => c,
        Err(e) => {
            t.error(e);
            return t;
        }
    };
    while Instant::now() < deadline {
        let start = Instant::now();
        match conn
            .post(url, &o.body)
            .await
            .and_then(|(s, b)| check(s, &b, &o.expect))
        {
            Ok(()) => t.latencies_us.push(micros(start.elapsed())),
            Err(e) => {
                t.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    t
}

/// Submits one session and polls it until done.
async fn async_cycle(o: &Opts, conn: &mut Conn) -> Result<(), String> {
    let (status, body) = conn.post(&o.urls[0], &o.body).await?;
    check(status, &body, "")?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("submit answer: {e}"))?;
    let id = v["data"]
        .as_str()
        .ok_or("submit answer has no session id")?;
    let query = serde_json::json!({ "session_id": id }).to_string();
    loop {
        tokio::time::sleep(o.poll).await;
        let (status, body) = conn.post(&o.urls[1], &query).await?;
        check(status, &body, "")?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("query answer: {e}"))?;
        if v["data"][0]["done"].as_bool() == Some(true) {
            if v["data"][0]["error"].as_str() != Some("") {
                return Err(format!("session failed: {v}"));
            }
            return Ok(());
        }
    }
}

async fn async_worker(o: &Opts, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    let mut conn = match Conn::new(&o.urls[0]) {
        Ok(c) => c,
        Err(e) => {
            t.error(e);
            return t;
        }
    };
    while Instant::now() < deadline {
        let start = Instant::now();
        match async_cycle(o, &mut conn).await {
            Ok(()) => t.latencies_us.push(micros(start.elapsed())),
            Err(e) => {
                t.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    t
}

fn run_http(o: Rc<Opts>) -> Result<String, String> {
    let want = if o.mode == "async" { 2 } else { 1 };
    if o.urls.len() != want {
        return Err(format!("{} needs {want} url(s)", o.mode));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    let cpu = Cpu::now();
    let start = Instant::now();
    let deadline = start + o.duration;
    let total = local.block_on(&rt, async {
        let workers: Vec<_> = (0..o.concurrency)
            .map(|_| {
                let o = o.clone();
                tokio::task::spawn_local(async move {
                    if o.mode == "async" {
                        async_worker(&o, deadline).await
                    } else {
                        http_worker(&o, deadline).await
                    }
                })
            })
            .collect();
        let mut total = Tally::default();
        for w in workers {
            match w.await {
                Ok(t) => total.merge(t),
                Err(e) => total.error(format!("worker panicked: {e}")),
            }
        }
        total
    });
    Ok(total.report(start.elapsed().as_secs_f64(), Cpu::now().since(cpu)))
}

fn run_spawn(o: &Opts) -> Result<String, String> {
    let (prog, args) = o
        .command
        .split_first()
        .ok_or("spawn needs -- PROG ARGS...")?;
    let cpu = Cpu::now();
    let start = Instant::now();
    let deadline = start + o.duration;
    let total = std::thread::scope(|s| {
        let workers: Vec<_> = (0..o.concurrency)
            .map(|_| {
                s.spawn(move || {
                    let mut t = Tally::default();
                    while Instant::now() < deadline {
                        let began = Instant::now();
                        let out = std::os::unix::process::CommandExt::process_group(
                            Command::new(prog)
                                .args(args)
                                .stdin(Stdio::null())
                                .stdout(Stdio::piped())
                                .stderr(Stdio::piped()),
                            0,
                        )
                        .output();
                        match out {
                            Ok(out) if out.status.success() && !out.stdout.is_empty() => {
                                t.latencies_us.push(micros(began.elapsed()))
                            }
                            Ok(out) => t.error(format!("{prog} ended with {}", out.status)),
                            Err(e) => t.error(format!("cannot spawn {prog}: {e}")),
                        }
                    }
                    t
                })
            })
            .collect();
        let mut total = Tally::default();
        for w in workers {
            match w.join() {
                Ok(t) => total.merge(t),
                Err(_) => total.error("worker panicked".into()),
            }
        }
        total
    });
    Ok(total.report(start.elapsed().as_secs_f64(), Cpu::now().since(cpu)))
}

fn main() {
    let result = parse_args().and_then(|o| match o.mode.as_str() {
        "http" | "async" => run_http(Rc::new(o)),
        "spawn" => run_spawn(&o),
        other => Err(format!("unknown mode {other}; use http, async or spawn")),
    });
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    }
}
