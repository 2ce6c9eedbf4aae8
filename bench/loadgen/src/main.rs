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
//!   with the service's own spawner (stdin null, stdout and stderr piped and read to the end, own
//!   process group, reaped; `floor.rs`): the most calls per second any service that runs this
//!   command could answer on this machine.
//!
//! Every mode also reports `self_cpu_us` and `children_cpu_us`, the CPU time (user + system) it and
//! its reaped children used: for the floor that is the cost of spawning and of the command itself.
//!
//! The HTTP modes run on a current-thread runtime: the generator shares the CPU with the server
//! and its children, so it should use as little of it as it can. For the same reason they use a
//! minimal HTTP/1.1 client of their own: each worker writes its prebuilt request in one write and
//! parses the response (`Content-Length`, chunked, or until close) from a reused buffer.

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod floor;

struct Opts {
    mode: String,
    urls: Vec<String>,
    body: String,
    /// Extra request header lines (`Name: value`), e.g. a bearer token.
    headers: Vec<String>,
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
        headers: Vec::new(),
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
            "--header" => {
                let h = value("--header")?;
                if !h.contains(':') || h.contains(['\r', '\n']) {
                    return Err(format!("--header {h:?}: expected one `Name: value` line"));
                }
                o.headers.push(h);
            }
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
    /// A worker that could not start.
    fn failed(e: String) -> Self {
        let mut t = Self::default();
        t.error(e);
        t
    }

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

/// Where one URL points: the address to connect to, the `Host` header, and the request target.
#[derive(Debug, PartialEq)]
struct Target {
    connect: String,
    host: String,
    path: String,
}

impl Target {
    /// Parses `http://host[:port][/path][?query]` (no TLS, no user info).
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or(format!("bad url {url}: only http:// is supported"))?;
        let rest = rest.split('#').next().unwrap_or_default();
        let (host, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if host.is_empty() || host.contains('@') {
            return Err(format!("bad url {url}: needs a host and no user info"));
        }
        let has_port = host[host.rfind(']').map_or(0, |i| i + 1)..].contains(':');
        Ok(Self {
            connect: if has_port {
                host.to_string()
            } else {
                format!("{host}:80")
            },
            host: host.to_string(),
            path: match path.as_bytes().first() {
                None => "/".to_string(),
                Some(b'?') => format!("/{path}"),
                Some(_) => path.to_string(),
            },
        })
    }

    /// The whole request, ready for one write, with `headers` (`Name: value` lines) added.
    fn post(&self, body: &str, headers: &[String]) -> Vec<u8> {
        let mut r = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.path,
            self.host,
            body.len()
        );
        for h in headers {
            r.push_str(h);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(body.as_bytes());
        r
    }
}

/// How a response's body ends.
#[derive(Debug, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A parsed status line and headers.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    close: bool,
    framing: Framing,
    /// Bytes the head took, blank line included.
    len: usize,
}

/// A complete response at the start of a buffer; its body is elsewhere.
#[derive(Debug, PartialEq)]
struct Response {
    status: u16,
    /// The server will not take another request on this connection.
    close: bool,
    /// Bytes the response took.
    len: usize,
}

/// The most a status line and headers (or a chunk-size or trailer line) may take.
const MAX_HEAD: usize = 64 * 1024;

fn find_lf(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// The next line of `buf` from `pos` without its CR LF, and where the line after it starts;
/// `None` when the line is not complete yet.
fn line_at(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, String> {
    match find_lf(&buf[pos..]) {
        Some(i) => {
            let line = &buf[pos..pos + i];
            Ok(Some((
                line.strip_suffix(b"\r").unwrap_or(line),
                pos + i + 1,
            )))
        }
        None if buf.len() - pos > MAX_HEAD => Err("response line too long".into()),
        None => Ok(None),
    }
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0, |n, &d| {
        Some(n * 16 + u64::from(char::from(d).to_digit(16)?))
    })
}

fn excerpt(s: &[u8]) -> String {
    String::from_utf8_lossy(s).chars().take(100).collect()
}

/// Parses `HTTP/1.x NNN reason`; returns the status and whether the version is HTTP/1.0.
fn parse_status_line(line: &[u8]) -> Result<(u16, bool), String> {
    let bad = || format!("bad status line {:?}", excerpt(line));
    if line.len() < 12
        || !line.starts_with(b"HTTP/1.")
        || !line[7].is_ascii_digit()
        || line[8] != b' '
        || line.get(12).is_some_and(|&b| b != b' ')
    {
        return Err(bad());
    }
    let status = parse_decimal(&line[9..12]).ok_or_else(bad)?;
    if status < 100 {
        return Err(bad());
    }
    Ok((status as u16, line[7] == b'0'))
}

/// Parses the status line and headers at the start of `buf`; `None` when they are not all there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some((line, mut pos)) = line_at(buf, 0)? else {
        // Reject garbage at once rather than waiting for a line end that may never come.
        let n = buf.len().min(7);
        if buf[..n] != b"HTTP/1."[..n] {
            return Err(format!("bad status line {:?}", excerpt(buf)));
        }
        return Ok(None);
    };
    let (status, http10) = parse_status_line(line)?;
    let (mut length, mut chunked, mut encoded) = (None, false, false);
    let (mut close, mut keep_alive) = (false, false);
    loop {
        let Some((line, next)) = line_at(buf, pos)? else {
            return Ok(None);
        };
        pos = next;
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':');
        let name = &line[..colon.unwrap_or(0)];
        if name.is_empty()
            || name
                .iter()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("bad header line {:?}", excerpt(line)));
        }
        let value = line[name.len() + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("bad content-length {:?}", excerpt(value)))?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting content-length headers".into());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoded = true;
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = match (encoded, chunked, length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) | (false, _, None) => Framing::UntilClose,
        (false, _, Some(n)) => Framing::Length(n),
    };
    Ok(Some(Head {
        status,
        close: close || (http10 && !keep_alive),
        framing,
        len: pos,
    }))
}

/// Decodes the chunked body at the start of `buf` into `body`; returns the bytes it took, trailers
/// included, or `None` when it is not all there.
fn decode_chunked(buf: &[u8], body: &mut Vec<u8>) -> Result<Option<usize>, String> {
    let mut pos = 0;
    loop {
        let Some((line, next)) = line_at(buf, pos)? else {
            return Ok(None);
        };
        let digits = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = parse_hex(digits.trim_ascii())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("bad chunk size line {:?}", excerpt(line)))?;
        pos = next;
        if size == 0 {
            // Trailers, if any, then the blank line.
            loop {
                let Some((line, next)) = line_at(buf, pos)? else {
                    return Ok(None);
                };
                pos = next;
                if line.is_empty() {
                    return Ok(Some(pos));
                }
            }
        }
        let end = pos.saturating_add(size);
        pos = match buf.get(end..end.saturating_add(2)) {
            None | Some(b"\r") => return Ok(None),
            Some([b'\n', ..]) => end + 1,
            Some(b"\r\n") => end + 2,
            Some(_) => return Err("chunk data not followed by CRLF".into()),
        };
        body.extend_from_slice(&buf[end - size..end]);
    }
}

/// Parses the response at the start of `buf` (skipping interim 1xx responses) and puts its body
/// in `body`. `None` when more bytes are needed; `eof` says none will come, so the response ends
/// here if its body runs until the connection closes and is an error if it is incomplete.
fn parse_response(buf: &[u8], eof: bool, body: &mut Vec<u8>) -> Result<Option<Response>, String> {
    body.clear();
    let mut start = 0;
    let (at, head) = loop {
        match parse_head(&buf[start..])? {
            Some(h) if h.status == 101 => return Err("unexpected 101 Switching Protocols".into()),
            Some(h) if h.status < 200 => start += h.len,
            Some(h) => break (start + h.len, h),
            None if eof => return Err("connection closed before the response head".into()),
            None => return Ok(None),
        }
    };
    let bodiless = head.status == 204 || head.status == 304;
    let end = match head.framing {
        _ if bodiless => Some(at),
        Framing::Length(n) => {
            let end = at.saturating_add(n);
            buf.get(at..end).map(|b| {
                body.extend_from_slice(b);
                end
            })
        }
        Framing::Chunked => decode_chunked(&buf[at..], body)?.map(|n| at + n),
        Framing::UntilClose if eof => {
            body.extend_from_slice(&buf[at..]);
            Some(buf.len())
        }
        Framing::UntilClose => None,
    };
    match end {
        Some(len) => Ok(Some(Response {
            status: head.status,
            close: head.close || (head.framing == Framing::UntilClose && !bodiless),
            len,
        })),
        None if eof => Err("connection closed before the response body ended".into()),
        None => Ok(None),
    }
}

/// One keep-alive HTTP/1.1 connection, reopened after a failure or a `Connection: close`.
struct Conn {
    connect: String,
    stream: Option<TcpStream>,
    /// What the last response read from the connection; kept to reuse its allocation.
    buf: Vec<u8>,
    /// The last response's body.
    body: Vec<u8>,
}

impl Conn {
    fn new(target: &Target) -> Self {
        Self {
            connect: target.connect.clone(),
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            body: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends one request made by [`Target::post`]; returns the status, with the body in
    /// `self.body`.
    async fn post(&mut self, request: &[u8]) -> Result<u16, String> {
        let result = self.exchange(request).await;
        if !matches!(result, Ok((_, false))) {
            self.stream = None;
        }
        result.map(|(status, _)| status)
    }

    /// Returns the status and whether the connection must not be reused.
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, bool), String> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(&self.connect)
                    .await
                    .map_err(|e| format!("connect {}: {e}", self.connect))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                self.stream.insert(s)
            }
        };
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        loop {
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if let Some(r) = parse_response(&self.buf, n == 0, &mut self.body)? {
                // Bytes after the response mean the connection is out of step: drop it.
                return Ok((r.status, r.close || r.len != self.buf.len()));
            }
            if n == 0 {
                return Err("connection closed".into());
            }
        }
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

/// Calls `call` until `deadline`, timing every call that succeeds; after one that fails it
/// records the error and backs off briefly, so a broken server is not hammered.
async fn timed_loop(deadline: Instant, mut call: impl AsyncFnMut() -> Result<(), String>) -> Tally {
    let mut t = Tally::default();
    while Instant::now() < deadline {
        let start = Instant::now();
        match call().await {
            Ok(()) => t.latencies_us.push(micros(start.elapsed())),
            Err(e) => {
                t.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    t
}

async fn http_worker(o: &Opts, deadline: Instant) -> Tally {
    let target = match Target::parse(&o.urls[0]) {
        Ok(target) => target,
        Err(e) => return Tally::failed(e),
    };
    let request = target.post(&o.body, &o.headers);
    let mut conn = Conn::new(&target);
    timed_loop(deadline, async || {
        let status = conn.post(&request).await?;
        check(status, &conn.body, &o.expect)
    })
    .await
}

/// Submits one session and polls it until done.
async fn async_cycle(
    o: &Opts,
    conn: &mut Conn,
    submit: &[u8],
    query_target: &Target,
) -> Result<(), String> {
    let status = conn.post(submit).await?;
    check(status, &conn.body, "")?;
    let v: Value = serde_json::from_slice(&conn.body).map_err(|e| format!("submit answer: {e}"))?;
    let id = v["data"]
        .as_str()
        .ok_or("submit answer has no session id")?;
    let query = query_target.post(
        &serde_json::json!({ "session_id": id }).to_string(),
        &o.headers,
    );
    loop {
        tokio::time::sleep(o.poll).await;
        let status = conn.post(&query).await?;
        check(status, &conn.body, "")?;
        let v: Value =
            serde_json::from_slice(&conn.body).map_err(|e| format!("query answer: {e}"))?;
        if v["data"][0]["done"].as_bool() == Some(true) {
            if v["data"][0]["error"].as_str() != Some("") {
                return Err(format!("session failed: {v}"));
            }
            return Ok(());
        }
    }
}

async fn async_worker(o: &Opts, deadline: Instant) -> Tally {
    let (submit_target, query_target) =
        match Target::parse(&o.urls[0]).and_then(|s| Ok((s, Target::parse(&o.urls[1])?))) {
            Ok(targets) => targets,
            Err(e) => return Tally::failed(e),
        };
    let submit = submit_target.post(&o.body, &o.headers);
    // Both URLs share the worker's one connection, which goes to the submit URL's host.
    let mut conn = Conn::new(&submit_target);
    timed_loop(deadline, async || {
        async_cycle(o, &mut conn, &submit, &query_target).await
    })
    .await
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
    if o.command.is_empty() {
        return Err("spawn needs -- PROG ARGS...".into());
    }
    let cpu = Cpu::now();
    let start = Instant::now();
    let deadline = start + o.duration;
    let total = std::thread::scope(|s| {
        let workers: Vec<_> = (0..o.concurrency)
            .map(|_| {
                s.spawn(move || {
                    let mut t = Tally::default();
                    let command = match floor::Prepared::new(&o.command) {
                        Ok(c) => c,
                        Err(e) => {
                            t.error(e);
                            return t;
                        }
                    };
                    while Instant::now() < deadline {
                        let began = Instant::now();
                        match command.run() {
                            Ok(true) => t.latencies_us.push(micros(began.elapsed())),
                            Ok(false) => {
                                t.error(format!("{:?} failed or printed nothing", o.command))
                            }
                            Err(e) => t.error(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `raw` as it would arrive in one read, returning the response and its body.
    fn parse(raw: &[u8], eof: bool) -> Result<Option<(Response, Vec<u8>)>, String> {
        let mut body = Vec::new();
        Ok(parse_response(raw, eof, &mut body)?.map(|r| (r, body)))
    }

    #[test]
    fn content_length_body() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\n\r\nhello\n";
        let (r, body) = parse(raw, false).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert!(!r.close);
        assert_eq!(r.len, raw.len());
        assert_eq!(body, b"hello\n");
    }

    #[test]
    fn only_the_first_response_is_taken() {
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\n";
        let (r, body) = parse(raw, false).unwrap().unwrap();
        assert_eq!(
            (r.status, r.len, body.as_slice()),
            (404, raw.len() - 17, &b"no"[..])
        );
    }

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (r, body) = parse(raw, false).unwrap().unwrap();
        assert_eq!((r.status, r.close, r.len), (200, false, raw.len()));
        assert_eq!(body, b"hello, world");
    }

    #[test]
    fn chunk_split_across_reads() {
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                           a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
        // Every split point: the first part alone needs more bytes, the whole is complete.
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut], false), Ok(None), "cut at {cut}");
        }
        let (r, body) = parse(raw, false).unwrap().unwrap();
        assert_eq!(r.len, raw.len());
        assert_eq!(body, b"0123456789abc");
        // Bytes the same buffer kept from an earlier, incomplete parse do not leak into the body.
        let mut reused = b"stale".to_vec();
        parse_response(&raw[..60], false, &mut reused).unwrap();
        parse_response(raw, false, &mut reused).unwrap().unwrap();
        assert_eq!(reused, b"0123456789abc");
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let raw = b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh:  3 \r\nCONNECTION: Close\r\n\r\nabc";
        let (r, body) = parse(raw, false).unwrap().unwrap();
        assert!(r.close);
        assert_eq!(body, b"abc");
        let raw = b"HTTP/1.1 200 OK\r\nTRANSFER-ENCODING: Chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
        assert_eq!(parse(raw, false).unwrap().unwrap().1, b"x");
    }

    #[test]
    fn incomplete_response_needs_more_bytes() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut], false), Ok(None), "cut at {cut}");
            assert!(parse(&raw[..cut], true).is_err(), "eof at {cut}");
        }
        assert!(parse(raw, false).unwrap().is_some());
    }

    #[test]
    fn body_until_close() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome body";
        assert_eq!(parse(raw, false), Ok(None));
        let (r, body) = parse(raw, true).unwrap().unwrap();
        assert!(r.close);
        assert_eq!(body, b"some body");
    }

    #[test]
    fn interim_and_bodiless_responses() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let (r, body) = parse(raw, false).unwrap().unwrap();
        assert_eq!((r.status, r.close, r.len), (204, false, raw.len()));
        assert!(body.is_empty());
    }

    #[test]
    fn malformed_responses_are_errors() {
        for raw in [
            &b"HTTP/1.1 2x0 OK\r\n\r\n"[..],
            b"HTTP/1.1 200OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20\r\n\r\n",
            b"<html>",
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(
                parse(raw, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn targets_and_requests() {
        let t = Target::parse("http://127.0.0.1:19090/hooks/echo?x=1#frag").unwrap();
        assert_eq!(
            t,
            Target {
                connect: "127.0.0.1:19090".into(),
                host: "127.0.0.1:19090".into(),
                path: "/hooks/echo?x=1".into(),
            }
        );
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!(
            (t.connect.as_str(), t.path.as_str()),
            ("example.com:80", "/")
        );
        assert_eq!(Target::parse("http://[::1]/").unwrap().connect, "[::1]:80");
        assert!(Target::parse("https://example.com/").is_err());
        assert!(Target::parse("http:///path").is_err());
        assert_eq!(
            Target::parse("http://h:1/p").unwrap().post("{}", &[]),
            b"POST /p HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\n\r\n{}"
        );
        assert_eq!(
            Target::parse("http://h:1/p")
                .unwrap()
                .post("[]", &["Authorization: Bearer t".to_string()]),
            b"POST /p HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\nAuthorization: Bearer t\r\n\r\n[]"
        );
    }
}
