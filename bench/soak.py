#!/usr/bin/env python3
"""Soak: the real service under a mixed load for a while, then a clean shutdown.

    python3 bench/soak.py                                   # 60 s against target/release/celery-service
    python3 bench/soak.py --binary target/debug/celery-service --seconds 20   # CI

It starts the binary on a free loopback port, in a temporary folder with its own task config and
collect/, and for `--seconds` drives it from a few client threads, all at once:

- sync calls of a quick `sh` echo, a 0.3 s task, a `concurrency_policy: forbid` task (200, or the
  documented 409 while another run of it is active) and the built-in counter, each answer checked;
- async calls of the same, each session polled with /async/query until it is done and its final
  state checked;
- long runs killed with /async/kill (the answer and the session say killed);
- reloads: a task is added to and removed from the YAML (written to a new file renamed over the
  old) and POST /-/reload is called; calls of that task must answer 200 or 404, and right after a
  reload exactly what the new file says;
- bad input: malformed JSON, wrong types, ids that are not UUIDs, unknown routes and tasks, a
  wrong method, an oversized body: each must get its documented 4xx with an envelope naming the
  problem.

Then every async session must still be listed by /async/query and be found, ended and with the
expected status, in GET /results (the embedded store); a session that vanishes or never ends is
lost. Last, with two long runs still active, the service gets SIGTERM (CS_DRAIN_DELAY=0s) and
must exit 0 leaving no process behind: every process the service started inherits a marker in
its environment, and /proc is searched for it after the exit.

It prints the calls by kind and status and the service's RSS (at start, after warm-up, peak, at
the end), and exits non-zero naming every problem: any 5xx, any lost session, any wrong answer,
a client error, RSS grown by more than `--max-rss-growth-mib`, an unclean shutdown. Python 3
standard library only; see BENCHMARKS.md.
"""

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's own helpers: Service, Broken, machine)

BASE_TASKS = """\
# Written by bench/soak.py.
- name: echo
  cluster_type: soak
  language: sh
  executable: echo soak
  collected: false
- name: nap
  cluster_type: soak
  language: sh
  executable: sleep 0.3; echo napped
  collected: false
- name: long
  cluster_type: soak
  language: binary
  executable: /bin/sleep
  args: ["30"]
  collected: false
  timeout: 2m
- name: hold
  cluster_type: soak
  language: sh
  executable: hold.sh
  collected: true
  concurrency_policy: forbid
"""
FLUX = """\
- name: flux
  cluster_type: soak
  language: sh
  executable: echo flux {version}
  collected: false
"""
COLLECT = {"hold.sh": "#!/bin/sh\nsleep 0.5\necho held\n"}
BASE_TASK_COUNT = 5  # the four above and the built-in counter

POLL_S = 0.05  # between two /async/query of a running session
SESSION_LIMIT_S = 60  # a session not ended this long after its start is lost
REQUEST_TIMEOUT_S = 60  # no answer this long to one request is a failure
MAX_ASYNC = 8000  # async sessions started in all, below the service's --max-sessions (10000)
SHUTDOWN_TIMEOUT = "2s"  # --shutdown-timeout: the long runs left at SIGTERM are ended after it

# Bad requests: (method, path, body, status, words one of which `msg` must contain).
BAD = [
    ("POST", "/sync/soak/echo", b"[nope", 400, ["not valid JSON"]),
    ("POST", "/sync/soak/echo", b'{"x": 1}', 400, ["JSON array of strings"]),
    ("POST", "/sync/soak/echo", b"[1, 2]", 400, ["element 0 is a number"]),
    ("POST", "/async/soak/echo", b'"one"', 400, ["JSON array of strings"]),
    ("POST", "/sync/soak/echo", b'["\xff"]', 400, ["not valid JSON"]),
    ("POST", "/sync/tendb-ha/counter", b'{"counter": "x"}', 400, ["CounterParams"]),
    ("POST", "/async/tendb-ha/counter", b'{"counter": 100000}', 400, ["maximum"]),
    ("POST", "/async/query", b'{"session_id": "abc"}', 400, ["not a UUID"]),
    ("POST", "/async/query", b'{"session_id": 5}', 400, ["not a UUID"]),
    ("POST", "/async/query", b"[1]", 400, ["SessionQuery"]),
    ("POST", "/async/kill", b'{"session_id": "not-a-uuid"}', 400, ["not a UUID"]),
    ("POST", "/async/kill", b"{}", 400, ["session_id", "SessionRef"]),
    ("POST", "/async/query", None, 404, ["not found"]),  # body: a random UUID, made per call
    ("GET", "/async/output?session_id=xyz", None, 400, ["not a UUID"]),
    ("GET", "/results?limit=0", None, 400, ["limit"]),
    ("GET", "/results?limit=abc", None, 400, ["limit"]),
    ("POST", "/sync/soak/no-such-task", b"", 404, ["no task at"]),
    ("GET", "/no/such/route", None, 404, ["no such route"]),
    ("GET", "/sync/soak/echo", None, 405, ["method not allowed"]),
    ("POST", "/sync/soak/echo", b"[" + b'"a",' * 400_000 + b'"a"]', 413, ["--max-body-bytes"]),
]


class Soak:
    """The shared state of one soak: counts, failures, the sessions to find again."""

    def __init__(self, port, seconds):
        self.port = port
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = collections.Counter()  # (kind, status) -> calls
        self.failures = []
        self.sessions = {}  # id -> (task path, expected /results status)
        self.async_started = 0
        self.lost = 0  # sessions that vanished or never ended

    def running(self):
        return not self.stop.is_set() and time.monotonic() < self.stop_at

    def count(self, kind, status):
        with self.lock:
            self.counts[(kind, status)] += 1

    def fail(self, what, lost=False):
        with self.lock:
            self.failures.append(what)
            self.lost += lost
        run.log(f"soak: FAIL: {what}")

    def remember(self, sid, task, status):
        with self.lock:
            self.sessions[sid] = (task, status)

    def may_start_async(self):
        with self.lock:
            if self.async_started >= MAX_ASYNC:
                return False
            self.async_started += 1
            return True


class Client:
    """One keep-alive connection to the service; a request that gets no answer is a failure."""

    def __init__(self, soak, fresh=False):
        self.soak, self.fresh, self.conn = soak, fresh, None
        self.last = None  # the previous request and answer on this connection, for failure reports

    def call(self, kind, method, path, body=None):
        """(status, envelope or None, headers); counts the call; a 5xx is a failure here."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        if self.conn is None:
            self.last = None
            self.conn = http.client.HTTPConnection("127.0.0.1", self.soak.port, timeout=REQUEST_TIMEOUT_S)
        try:
            self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            after = f" (the connection's previous request: {self.last})" if self.last else " (a new connection)"
            self.close()
            self.soak.count(kind, "no answer")
            self.soak.fail(f"{kind}: {method} {path}: no answer: {e!r}{after}")
            return None, None, None
        self.last = f"{method} {path} answered {resp.status} {time.monotonic() - self.soak.t0:.3f} s in"
        if self.fresh or resp.will_close:
            self.close()
        self.soak.count(kind, resp.status)
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        if resp.status >= 500:
            self.soak.fail(f"{kind}: {method} {path}: {resp.status} {raw[:300]!r}")
        return resp.status, envelope, resp.headers

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def is_refusal(envelope):
    """The documented 409 of a `forbid` task: code 1 naming the active session."""
    return (isinstance(envelope, dict) and envelope.get("code") == 1
            and "already running as session" in envelope.get("msg", "")
            and "forbid" in envelope["msg"])


def expect_ok(soak, kind, status, envelope, check):
    """A 200 with code 0 whose data passes `check` (a value to equal, or a predicate)."""
    if status is None:
        return False
    if status != 200 or not isinstance(envelope, dict) or envelope.get("code") != 0:
        if status < 500:  # a 5xx is already a failure
            soak.fail(f"{kind}: expected 200 code 0, got {status} {envelope}")
        return False
    data = envelope.get("data")
    good = check(data) if callable(check) else data == check
    if not good:
        soak.fail(f"{kind}: wrong data {data!r} (expected {check if not callable(check) else 'another'})")
    return good


# The tasks called by the sync and async workers: (name, path, body, what a good end answers).
CALLS = [
    ("echo", "soak/echo", ["a b", "$(id)"], "soak a b $(id)"),
    ("nap", "soak/nap", None, "napped"),
    ("counter", "tendb-ha/counter", {"counter": 0}, "hello world"),
    ("hold", "soak/hold", None, "held"),
]


def sync_worker(soak, rng):
    client = Client(soak)
    while soak.running():
        name, path, body, want = rng.choice(CALLS + [("flux", "soak/flux", [], None)])
        kind = f"sync {name}"
        status, envelope, _ = client.call(kind, "POST", f"/sync/{path}", body)
        if name == "flux":
            if status == 404 and envelope and "no task at" in envelope.get("msg", ""):
                continue
            expect_ok(soak, kind, status, envelope, lambda d: isinstance(d, str) and d.startswith("flux "))
        elif name == "hold" and status == 409 and is_refusal(envelope):
            continue
        else:
            expect_ok(soak, kind, status, envelope, want)
    client.close()


def poll_session(soak, client, kind, sid):
    """Poll /async/query until the session is done; its final state, or None (a failure)."""
    deadline = time.monotonic() + SESSION_LIMIT_S
    while time.monotonic() < deadline:
        status, envelope, _ = client.call(f"{kind} query", "POST", "/async/query", {"session_id": sid})
        if status is None:
            return None
        if status != 200 or not envelope or envelope.get("code") != 0 or len(envelope["data"]) != 1:
            soak.fail(f"{kind}: session {sid} vanished: query answered {status} {envelope}", lost=True)
            return None
        session = envelope["data"][0]
        if session.get("id") != sid:
            soak.fail(f"{kind}: query of {sid} answered another session: {session}")
            return None
        if session.get("done"):
            return session
        time.sleep(POLL_S)
    soak.fail(f"{kind}: session {sid} lost: not done {SESSION_LIMIT_S} s after it started", lost=True)
    return None


def async_worker(soak, rng):
    client = Client(soak)
    calls = CALLS[:2] + [("counter", "tendb-ha/counter", {"counter": 1}, "hello world"), CALLS[3]]
    while soak.running() and soak.may_start_async():
        name, path, body, want = rng.choice(calls)
        kind = f"async {name}"
        status, envelope, _ = client.call(kind, "POST", f"/async/{path}", body)
        if name == "hold" and status == 409 and is_refusal(envelope):
            continue
        if not expect_ok(soak, kind, status, envelope, lambda d: isinstance(d, str) and is_uuid(d)):
            continue
        sid = envelope["data"]
        soak.remember(sid, path, "ok")
        session = poll_session(soak, client, kind, sid)
        if session is None:
            continue
        want_args = body if body is not None else []
        if (session.get("message") != want or session.get("error") != "" or session.get("task") != path
                or session.get("args") != want_args or session.get("end_at") is None
                or (name != "counter" and session.get("exit_code") != 0)):
            soak.fail(f"{kind}: session {sid} ended wrong: {session}")
    client.close()


def killer(soak, rng):
    """Starts a long run, lets it run a moment, kills it: the answer and the session say killed."""
    client = Client(soak)
    while soak.running() and soak.may_start_async():
        status, envelope, _ = client.call("kill: start", "POST", "/async/soak/long", [])
        if not expect_ok(soak, "kill: start", status, envelope, lambda d: isinstance(d, str) and is_uuid(d)):
            continue
        sid = envelope["data"]
        soak.remember(sid, "soak/long", "killed")
        time.sleep(rng.uniform(0.05, 0.5))
        status, envelope, _ = client.call("kill", "POST", "/async/kill", {"session_id": sid})
        if not expect_ok(soak, "kill", status, envelope,
                         lambda d: isinstance(d, dict) and d.get("id") == sid and d.get("done") is True
                         and d.get("error", "").startswith("killed on request")):
            continue
        session = poll_session(soak, client, "kill", sid)
        if session is not None and not session.get("error", "").startswith("killed on request"):
            soak.fail(f"kill: session {sid} does not say killed: {session}")
    client.close()


def reloader(soak, config, rng):
    """Adds and removes the flux task; right after each reload it must answer as the file says."""
    client = Client(soak)
    version = 0
    while soak.running():
        version += 1
        present = version % 2 == 1
        text = BASE_TASKS + (FLUX.format(version=version) if present else "")
        fresh = config.with_name(f".{config.name}.new")
        fresh.write_text(text)
        os.replace(fresh, config)
        status, envelope, _ = client.call("reload", "POST", "/-/reload")
        want = BASE_TASK_COUNT + (1 if present else 0)
        if expect_ok(soak, "reload", status, envelope,
                     lambda d: isinstance(d, dict) and d.get("last_error") is None and d.get("task_count") == want):
            status, envelope, _ = client.call("sync flux after reload", "POST", "/sync/soak/flux", [])
            if present:
                expect_ok(soak, "sync flux after reload", status, envelope, f"flux {version}")
            elif status != 404 or not envelope or "no task at" not in envelope.get("msg", ""):
                soak.fail(f"sync flux after its removal: expected 404 `no task at`, got {status} {envelope}")
        pause(soak, rng.uniform(0.5, 1.5))
    client.close()


def bad_input(soak, rng):
    """Each bad request on a new connection (a 413 may close it), at a few per second."""
    client = Client(soak, fresh=True)
    while soak.running():
        method, path, body, want, words = rng.choice(BAD)
        if path == "/async/query" and body is None:
            body = json.dumps({"session_id": str(uuid.uuid4())}).encode()
        status, envelope, _ = client.call(f"bad {want}", method, path, body)
        if status is None:
            continue
        msg = envelope.get("msg", "") if isinstance(envelope, dict) else ""
        if (status != want or not isinstance(envelope, dict) or envelope.get("code") != 1 or envelope.get("data") is not None
                or not any(w in msg for w in words)):
            soak.fail(f"bad input {method} {path[:60]}: expected {want} naming {words}, got {status} {envelope}")
        pause(soak, rng.uniform(0.05, 0.3))


def pause(soak, seconds):
    soak.stop.wait(max(0.0, min(seconds, soak.stop_at - time.monotonic())))


def is_uuid(text):
    try:
        uuid.UUID(text)
        return True
    except ValueError:
        return False


def sessions_kept(soak, client):
    """Every async session is still in memory, ended, and in the result store with its status."""
    status, envelope, _ = client.call("final query", "POST", "/async/query", {})
    if not expect_ok(soak, "final query", status, envelope, lambda d: isinstance(d, list)):
        return
    live = {s["id"]: s for s in envelope["data"]}
    for sid in soak.sessions:
        if sid not in live:
            soak.fail(f"session {sid} lost: /async/query no longer lists it", lost=True)
        elif not live[sid].get("done"):
            soak.fail(f"session {sid} lost: still not done after the load: {live[sid]}", lost=True)
    # The store is written behind the runs: poll until every record is there and ended.
    deadline = time.monotonic() + 30
    while True:
        records = all_results(soak, client)
        if records is None:
            return
        missing = [sid for sid in soak.sessions if sid not in records or not records[sid].get("done")]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for sid in missing:
        soak.fail(f"session {sid} lost: {'not ended' if sid in records else 'not found'} in GET /results"
                  f" 30 s after the load", lost=True)
    for sid, (task, want) in soak.sessions.items():
        got = records.get(sid)
        if got and got.get("done") and (got.get("status") != want or got.get("path") != task):
            soak.fail(f"session {sid}: /results says {got.get('path')} {got.get('status')}, expected {task} {want}")
    return len(records)


def all_results(soak, client):
    """Every record of GET /results, by session id, following `next`."""
    records, before = {}, None
    while True:
        path = "/results?limit=1000" + (f"&before={before}" if before else "")
        status, envelope, _ = client.call("final results", "GET", path)
        if not expect_ok(soak, "final results", status, envelope, lambda d: isinstance(d, dict)):
            return None
        for r in envelope["data"]["records"]:
            records[r["session_id"]] = r
        before = envelope["data"]["next"]
        if not before:
            return records


def marked_processes(marker):
    """Pids of the processes whose environment holds `marker`: the service and all it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def shutdown(soak, svc, marker):
    """Two long runs active, then SIGTERM: exit 0 within the shutdown timeout and nothing left."""
    client = Client(soak)
    for _ in range(2):
        status, envelope, _ = client.call("shutdown: start", "POST", "/async/soak/long", [])
        expect_ok(soak, "shutdown: start", status, envelope, lambda d: isinstance(d, str) and is_uuid(d))
    client.close()
    deadline = time.monotonic() + 10
    while svc.children() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = [p for p in marked_processes(marker) if p != svc.proc.pid]
    svc.conn.close()
    started = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    try:
        code = svc.proc.wait(30)
    except subprocess.TimeoutExpired:
        soak.fail("shutdown: the service did not exit within 30 s of SIGTERM")
        svc.proc.kill()
        code = svc.proc.wait()
    took = time.monotonic() - started
    if code != 0:
        soak.fail(f"shutdown: exit code {code}, expected 0")
    deadline = time.monotonic() + 5  # an ended process may take a moment to be reaped by init
    left = marked_processes(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = marked_processes(marker)
    if left:
        soak.fail(f"shutdown: processes of the service left running: {left}")
    return {"exit_code": code, "seconds": took, "children_at_sigterm": len(before), "left": len(left)}


def summary(soak, rss, records, stop):
    print("\n## soak summary\n")
    print("| calls | status | count |\n|---|---|---:|")
    for (kind, status), n in sorted(soak.counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"| {kind} | {status} | {n} |")
    total = sum(soak.counts.values())
    by_status = collections.Counter()
    for (_, status), n in soak.counts.items():
        by_status[status] += n
    print(f"\n{total} calls; by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items(), key=str)))
    killed = sum(1 for _, st in soak.sessions.values() if st == "killed")
    print(f"{len(soak.sessions)} async sessions ({killed} killed), {soak.lost} lost; looked up again in "
          f"/async/query and GET /results ({records} records in all)")
    print(f"RSS: {rss['start'] / 1024:.1f} MiB at start, {rss['warm'] / 1024:.1f} MiB after warm-up, "
          f"{rss['peak'] / 1024:.1f} MiB peak, {rss['end'] / 1024:.1f} MiB at the end")
    print(f"shutdown: exit code {stop['exit_code']} {stop['seconds']:.2f} s after SIGTERM, "
          f"{stop['children_at_sigterm']} processes of runs at the signal, {stop['left']} left after")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(run.SERVICE), help="the celery-service binary (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the load runs (default: 60)")
    ap.add_argument("--clients", type=int, default=2, help="sync and async client threads, each (default: 2)")
    ap.add_argument("--max-rss-growth-mib", type=float, default=64.0,
                    help="most the RSS may grow from the end of the warm-up to the end (default: 64)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the random mix (default: random)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (config, logs, results)")
    o = ap.parse_args()
    if o.seconds <= 0 or o.clients < 1:
        ap.error("--seconds must be above 0 and --clients at least 1")
    binary = Path(o.binary).resolve()
    if not binary.is_file():
        sys.exit(f"soak: no binary at {binary} (cargo build, or pass --binary)")
    seed = o.seed if o.seed is not None else random.randrange(1 << 30)
    marker = f"CELERY_SERVICE_SOAK={uuid.uuid4()}"
    os.environ["CELERY_SERVICE_SOAK"] = marker.split("=", 1)[1]  # inherited by every process it starts
    workdir = tempfile.mkdtemp(prefix="cs-soak-")
    m = run.machine()
    run.log(f"soak: {binary}, {o.seconds:g} s, {o.clients} + {o.clients} clients, seed {seed}, "
            f"{m['nproc']} CPUs ({m['cpu']}), folder {workdir}")
    svc = None
    try:
        svc = run.Service(workdir, "soak", binary, ["--shutdown-timeout", SHUTDOWN_TIMEOUT],
                          config=BASE_TASKS, collect=COLLECT)
        soak = Soak(svc.port, o.seconds)
        rss = {"start": svc.status("VmRSS")}
        rng = random.Random(seed)
        workers = [(sync_worker, ()) for _ in range(o.clients)] + [(async_worker, ()) for _ in range(o.clients)]
        workers += [(killer, ()), (reloader, (svc.dir / "external-tasks.yaml",)), (bad_input, ())]
        threads = [threading.Thread(target=guarded, args=(soak, fn, (*extra, random.Random(rng.random()))),
                                    name=fn.__name__, daemon=True) for fn, extra in workers]
        for t in threads:
            t.start()
        warm_at = time.monotonic() + min(10.0, o.seconds / 6)
        rss["peak"] = rss["start"]
        while soak.running():
            soak.stop.wait(min(1.0, max(0.0, soak.stop_at - time.monotonic())))
            now = svc.status("VmRSS")
            rss["peak"] = max(rss["peak"], now)
            if "warm" not in rss and time.monotonic() >= warm_at:
                rss["warm"] = now
        soak.stop.set()
        for t in threads:
            t.join(SESSION_LIMIT_S + 2 * REQUEST_TIMEOUT_S)
            if t.is_alive():
                soak.fail(f"client thread {t.name} did not finish within {SESSION_LIMIT_S + 2 * REQUEST_TIMEOUT_S} s")
        rss.setdefault("warm", rss["start"])
        records = sessions_kept(soak, Client(soak))
        rss["end"] = svc.status("VmRSS")
        rss["peak"] = max(rss["peak"], rss["end"])
        growth = (rss["end"] - rss["warm"]) / 1024
        if growth > o.max_rss_growth_mib:
            soak.fail(f"RSS grew by {growth:.1f} MiB after the warm-up (more than {o.max_rss_growth_mib:g} MiB)")
        stop = shutdown(soak, svc, marker.encode())
        svc = None
    except (run.Broken, OSError) as e:
        run.log(f"soak: BROKEN: {e}")
        return 1
    finally:
        if svc is not None:
            svc.stop()
        if o.keep:
            run.log(f"soak: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary(soak, rss, records, stop)
    if soak.failures:
        print(f"\nsoak: FAILED, {len(soak.failures)} problem(s) (seed {seed}); the first ones:", file=sys.stderr)
        for f in soak.failures[:20]:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"\nsoak: passed: {sum(soak.counts.values())} calls, no 5xx, no lost session, no wrong answer")
    return 0


def guarded(soak, fn, args):
    """Runs one client thread; a crash of the soak's own code is a failure, not a silent stop."""
    try:
        fn(soak, *args)
    except Exception as e:  # noqa: BLE001  (reported, and the soak fails)
        soak.fail(f"client thread {fn.__name__} crashed: {e!r}")


if __name__ == "__main__":
    sys.exit(main())
