#!/usr/bin/env python3
"""Benchmarks celery-service against the machine's limit (the "floor") and a peer (adnanh/webhook).

One command builds the release binary and the load generator, starts the service (and webhook) on
loopback with a bench config in a temporary folder, runs every workload and prints a table with
ratios measured in the same run, then the targets as PASS/MISS.

    python3 bench/run.py            # full: 2 s per measurement, median of 7 rounds
    python3 bench/run.py --short --profile dev   # CI: 1 s per measurement, once, debug binary

Exits non-zero when something is broken (the service does not start, a request fails, the floor
cannot spawn), never because a target is missed: machines vary. See BENCHMARKS.md.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
# The service binary of the cargo profile measured; main() points it at `--profile`'s.
SERVICE = ROOT / "target" / "release" / "celery-service"
LOADGEN = BENCH / "target" / "release" / "loadgen"

# A 100-character line, repeated to 50 MB by the big-output task.
LINE = "0123456789" * 10
BIG_OUTPUT = 50_000_000
SESSIONS = 10_000

# The targets of the benchmark issue; `report` judges one run by them, `bench/pool.py` many runs.
FLOOR_SHARE = 0.85  # sync throughput at concurrency 16 and 64: ours / floor, at least
WEBHOOK_FACTOR = 1.2  # the same: ours / webhook, at least
ADDED_P50_MS = 0.5  # p50 latency added over the floor at concurrency 1, below
RELOAD_P99_MS = 300  # rename of a new config to its first answer, p99, below
SESSIONS_RSS_MIB = 30  # RSS with SESSIONS retained sessions, below
BIG_OUTPUT_GROWTH_MIB = 20  # RSS growth while a task prints 50 MB, below
MANY_TASKS = 2000  # tasks in the big-config workload (bench/many_tasks.py)
MANY_RELOAD_MS = 300  # with MANY_TASKS tasks: rename of a new config to its new task answering, below
MANY_DOCS_RSS_MIB = 40  # with MANY_TASKS tasks: RSS after ten /openapi.json and ten /openapi.yaml, below
SLEEPERS = 1000  # async runs of `sleep 20` at once
SLEEPERS_RSS_MIB = 60  # the service's RSS while they sleep, below
SLEEPERS_CPU = 0.05  # the service's own CPU while they sleep, share of one core, below

CONFIG = f"""\
# Written by bench/run.py.
- name: echo_bin
  cluster_type: bench
  language: binary
  executable: /bin/echo
  args: ["hello"]
  collected: false
- name: echo_sh
  cluster_type: bench
  language: sh
  executable: echo hello
  collected: false
- name: sleep
  cluster_type: bench
  language: binary
  executable: /bin/sleep
  collected: false
- name: big_output
  cluster_type: bench
  language: sh
  executable: yes {LINE} | head -c {BIG_OUTPUT}
  collected: false
"""

# The same commands for webhook, answering with their output.
HOOKS = [
    {
        "id": "echo-bin",
        "execute-command": "/bin/echo",
        "include-command-output-in-response": True,
        "pass-arguments-to-command": [{"source": "string", "name": "hello"}],
    },
    {
        "id": "echo-sh",
        "execute-command": "/bin/sh",
        "include-command-output-in-response": True,
        "pass-arguments-to-command": [
            {"source": "string", "name": "-c"},
            {"source": "string", "name": "echo hello"},
        ],
    },
]

# The commands the floor program spawns: what the service runs for each task.
FLOOR = {
    "echo-bin": ["/bin/echo", "hello"],
    "echo-sh": ["sh", "-c", "echo hello"],
}


class Broken(Exception):
    """Something that must make the benchmark exit non-zero."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def machine():
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release()}


def identity():
    """What was measured, so that `bench/pool.py` pools only runs of one build: the service
    binary's SHA-256, and the commit it was built from (with whether the tree had changes)."""
    def git(*args):
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None
    digest = hashlib.sha256()
    with open(SERVICE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    status = git("status", "--porcelain")
    return {"service_sha256": digest.hexdigest(), "commit": git("rev-parse", "HEAD"),
            "tree_changed": None if status is None else bool(status),
            "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def build(profile):
    log(f"building the service (cargo profile {profile}) and the load generator…")
    subprocess.run(["cargo", "build", "--profile", profile, "--bin", "celery-service"], cwd=ROOT, check=True)
    env = dict(os.environ, CARGO_TARGET_DIR=str(BENCH / "target"))
    subprocess.run(
        ["cargo", "build", "--release", "--manifest-path", str(BENCH / "loadgen" / "Cargo.toml")],
        env=env,
        check=True,
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Broken(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise Broken(f"{what} did not listen on port {port} within {timeout} s")


class Service:
    """One celery-service process in its own folder."""

    def __init__(self, workdir, name, binary=None, extra=(), config=CONFIG, collect=None):
        """`config` is the task config's text; `collect` maps file names to the text of scripts
        put (executable) in collect/ before the service starts."""
        self.dir = Path(workdir) / name
        (self.dir / "collect").mkdir(parents=True)
        for file, text in (collect or {}).items():
            (self.dir / "collect" / file).write_text(text)
            (self.dir / "collect" / file).chmod(0o755)
        (self.dir / "external-tasks.yaml").write_text(config)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(binary or SERVICE), "run",
                "--address", f"127.0.0.1:{self.port}",
                "--external-task-config", "external-tasks.yaml",
                "--collect-dir", "collect",
                "--log-dir", "logs",
                "--no-log-console",
                *extra,
            ],
            cwd=self.dir,
            # Stopped by the benchmark, not behind a load balancer: no drain delay (an
            # environment variable, so that older builds that lack the flag start too).
            env={**{k: v for k, v in os.environ.items() if not k.startswith("CS_")},
                 "CS_DRAIN_DELAY": "0s"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc, "celery-service")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def post(self, path, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        text = resp.read()
        if resp.status != 200:
            raise Broken(f"POST {path}: status {resp.status}: {text[:300]!r}")
        answer = json.loads(text)
        if answer.get("code") != 0:
            raise Broken(f"POST {path}: {answer}")
        return answer

    def sync_target(self, task):
        """What `measure` needs to drive sync calls of `task` (echo-bin or echo-sh)."""
        return {"url": f"{self.base}/sync/bench/{task}", "pid": self.proc.pid, "body": "",
                "expect": '"data":"hello"'}

    def status(self, field):
        """A VmRSS/VmHWM-style field of /proc/<pid>/status, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise Broken(f"no {field} in /proc/{self.proc.pid}/status")

    def has_children(self):
        return self.children() > 0

    def children(self):
        """How many child processes the service has (from every thread's children list)."""
        count = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                count += len((task / "children").read_text().split())
            except OSError:
                pass
        return count

    def stop(self):
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Webhook:
    """adnanh/webhook running the same commands, or None when it is not installed."""

    def __init__(self, workdir):
        hooks = Path(workdir) / "hooks.json"
        hooks.write_text(json.dumps(HOOKS))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["webhook", "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc, "webhook")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def loadgen(args, timeout):
    out = subprocess.run([str(LOADGEN), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise Broken(f"loadgen {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_us(pid):
    """CPU time (user + system) of `pid` and of its reaped children, in microseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) * tick, (int(fields[13]) + int(fields[14])) * tick


def measure(kind, target, concurrency, seconds, must_work=True, headers=()):
    """One run of the load generator; `kind` is ours, webhook or floor.

    Besides throughput and latency it records the CPU time per call of the server itself
    (`self_us`) and of the commands it ran (`children_us`); for the floor these are the spawning
    loop and its children. Under CPU contention from other programs these stay comparable when
    requests per second do not."""
    common = ["--concurrency", str(concurrency), "--duration", str(seconds)]
    if kind == "floor":
        r = loadgen(["spawn", *common, "--", *FLOOR[target]], seconds + 60)
        r["self_us"], r["children_us"] = r["self_cpu_us"], r["children_cpu_us"]
        r["client_us"] = 0
    else:
        before = cpu_us(target["pid"])
        extra = [a for h in headers for a in ("--header", h)]
        r = loadgen(["http", target["url"], "--body", target["body"], "--expect", target["expect"], *common,
                     *extra], seconds + 60)
        after = cpu_us(target["pid"])
        r["self_us"], r["children_us"] = after[0] - before[0], after[1] - before[1]
        r["client_us"] = r["self_cpu_us"]
    for k in ("self_us", "children_us", "client_us"):
        r[k] = r[k] / r["requests"] if r["requests"] else 0
    if r["errors"] and must_work:
        raise Broken(f"{kind} {target if kind == 'floor' else target['url']}: {r['errors']} errors, "
                     f"first: {r.get('first_error')}")
    if r["requests"] == 0 and must_work:
        raise Broken(f"{kind}: no request completed")
    return r


def median_of(runs):
    keys = ("rps", "p50_ms", "p99_ms", "errors", "self_us", "children_us", "client_us")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def sync_matrix(ours, peer, seconds, reps, results):
    """Every task at every concurrency: `reps` rounds of ours, the floor and webhook back to back.

    The machine's speed drifts (other guests share its host), so every ratio is taken within a
    round, from three runs a few seconds apart, and the row shows the median of those ratios; the
    order alternates between rounds so no one of the three is always measured first."""
    rows = []
    for task in ("echo-bin", "echo-sh"):
        for c in (1, 16, 64):
            runs = {"ours": [], "floor": [], "webhook": []}
            vs_floor, vs_peer, added_p50 = [], [], []
            for i in range(reps):
                order = ("ours", "floor", "webhook") if i % 2 == 0 else ("webhook", "floor", "ours")
                got = {}
                for kind in order:
                    if kind == "ours":
                        got[kind] = measure("ours", ours.sync_target(task), c, seconds)
                    elif kind == "floor":
                        got[kind] = measure("floor", task, c, seconds)
                    elif peer:
                        got[kind] = measure("webhook", {
                            "url": f"{peer.base}/hooks/{task}", "pid": peer.proc.pid, "body": "",
                            "expect": "hello"}, c, seconds, must_work=False)
                for kind, r in got.items():
                    runs[kind].append(r)
                vs_floor.append(got["ours"]["rps"] / got["floor"]["rps"])
                added_p50.append(got["ours"]["p50_ms"] - got["floor"]["p50_ms"])
                if "webhook" in got and got["webhook"]["rps"]:
                    vs_peer.append(got["ours"]["rps"] / got["webhook"]["rps"])
            row = {"task": task, "concurrency": c,
                   "vs_floor": statistics.median(vs_floor), "vs_floor_rounds": vs_floor,
                   "vs_webhook": statistics.median(vs_peer) if vs_peer else None,
                   "vs_webhook_rounds": vs_peer,
                   "added_p50_ms": statistics.median(added_p50), "added_p50_rounds": added_p50}
            for k, v in runs.items():
                row[k] = median_of(v) if v else None
            log(f"  {task} c={c}: ours {row['ours']['rps']:.0f}/s floor {row['floor']['rps']:.0f}/s"
                + (f" webhook {row['webhook']['rps']:.0f}/s" if row["webhook"] else "")
                + f"; ours/floor {row['vs_floor']:.2f}"
                + (f", ours/webhook {row['vs_webhook']:.2f}" if row["vs_webhook"] else ""))
            rows.append(row)
    results["sync"] = rows


def sessions_and_query(workdir, seconds, results):
    svc = Service(workdir, "sessions")
    try:
        time.sleep(0.2)
        before = svc.status("VmRSS")
        ids = []
        for _ in range(SESSIONS):
            ids.append(svc.post("/async/bench/echo-bin")["data"])
        deadline = time.monotonic() + 120
        while svc.has_children():
            if time.monotonic() > deadline:
                raise Broken("sessions still running two minutes after the last submission")
            time.sleep(0.05)
        time.sleep(0.2)
        rss = svc.status("VmRSS")
        # Only now ask for everything: the big answer must not be part of the RSS measured above.
        everything = svc.post("/async/query")["data"]
        done = sum(1 for s in everything if s["done"] and s["error"] == "")
        if done != SESSIONS:
            raise Broken(f"{done} of {SESSIONS} sessions finished successfully")
        results["sessions"] = {"count": SESSIONS, "rss_before_kib": before, "rss_kib": rss}
        log(f"  RSS {before} KiB idle, {rss} KiB with {SESSIONS} sessions")
        body = json.dumps({"session_id": ids[len(ids) // 2]})
        results["query"] = median_of([measure("ours", {
            "url": f"{svc.base}/async/query", "pid": svc.proc.pid, "body": body, "expect": '"done":true'}, 16, seconds)])
    finally:
        svc.stop()


def big_output(workdir, results):
    svc = Service(workdir, "bigoutput")
    try:
        time.sleep(0.2)
        before = svc.status("VmRSS")
        started = time.monotonic()
        answer = svc.post("/sync/bench/big-output")
        took = time.monotonic() - started
        if not answer["data"].startswith("0123456789"):
            raise Broken(f"big-output answered {answer}")
        hwm = svc.status("VmHWM")
        # The log rotates past 64 MB, so count every file of it.
        logged = sum(p.stat().st_size for p in (svc.dir / "logs").glob("big_output.log*"))
        results["big_output"] = {"rss_before_kib": before, "hwm_kib": hwm, "seconds": took,
                                 "log_bytes": logged}
        log(f"  50 MB output: RSS {before} KiB before, peak {hwm} KiB, {took:.2f} s")
    finally:
        svc.stop()


def sleepers(workdir, count, window, results):
    """`count` async runs of `sleep 20` at once: every submission answered, then the service's RSS
    and its own CPU time over `window` seconds while they all sleep (it should do nothing: no
    thread and no timer per run), then how long a shutdown takes to end them all (with
    `--shutdown-timeout 0s`: the default lets runs go on for 30 s, and `stop` gives up after 10)."""
    svc = Service(workdir, "sleepers", extra=["--shutdown-timeout", "0s"])
    try:
        started = time.monotonic()
        for _ in range(count):
            svc.post("/async/bench/sleep", ["20"])
        submitted = time.monotonic() - started
        deadline = time.monotonic() + 30
        while svc.children() < count:
            if time.monotonic() > deadline:
                raise Broken(f"only {svc.children()} of {count} sleeps running 30 s after submitting")
            time.sleep(0.05)
        # Let the last submissions' work settle, and never measure past the sleeps' end.
        time.sleep(0.5)
        window = min(window, 19 - (time.monotonic() - started))
        if window < 1:
            raise Broken(f"submitting {count} runs took {submitted:.1f} s: no time left to measure")
        before, t0 = cpu_us(svc.proc.pid)[0], time.monotonic()
        time.sleep(window)
        used, took = cpu_us(svc.proc.pid)[0] - before, time.monotonic() - t0
        rss = svc.status("VmRSS")
        if svc.children() < count:
            raise Broken(f"{count - svc.children()} sleeps ended before their time")
        t0 = time.monotonic()
        svc.stop()
        shutdown = time.monotonic() - t0
        results["sleepers"] = {"count": count, "submit_s": submitted, "rss_kib": rss,
                               "cpu_share": used / 1e6 / took, "window_s": took, "shutdown_s": shutdown}
        log(f"  {count} sleeping runs: submitted in {submitted:.2f} s, RSS {rss} KiB, "
            f"CPU {used / 1e6 / took:.2%} of a core over {took:.1f} s, shutdown {shutdown:.2f} s")
    finally:
        svc.stop()


def async_poll(ours, seconds, results):
    r = loadgen(["async", f"{ours.base}/async/bench/echo-bin", f"{ours.base}/async/query",
                 "--concurrency", "16", "--duration", str(seconds), "--poll-ms", "1"], seconds + 60)
    if r["errors"] or not r["requests"]:
        raise Broken(f"async submit+poll: {r}")
    results["async"] = r


def reload_latency(results):
    script = BENCH / "reload_latency.py"
    if not script.exists():
        results["reload"] = None
        return
    out = subprocess.run([sys.executable, str(script), str(SERVICE)], capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise Broken(f"reload_latency.py failed: {out.stderr.strip()[-500:]}")
    results["reload"] = json.loads(out.stdout.strip().splitlines()[-1])


def many_tasks(results):
    out = subprocess.run([sys.executable, str(BENCH / "many_tasks.py"), str(SERVICE),
                          "--tasks", str(MANY_TASKS)], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise Broken(f"many_tasks.py failed: {out.stderr.strip()[-500:]}")
    results["many_tasks"] = json.loads(out.stdout.strip().splitlines()[-1])


class Target:
    """One target: a name, the row field holding a run's median of it (and `rounds`, the field
    holding every round's value), its threshold and its direction."""

    def __init__(self, name, key, threshold, at_least, unit="", rounds=None):
        self.name, self.key, self.threshold, self.at_least, self.unit = name, key, threshold, at_least, unit
        self.rounds = rounds or (key and key + "_rounds")

    def met(self, value):
        return value >= self.threshold if self.at_least else value < self.threshold


def row_targets(row):
    """The targets a row of the sync table is judged by."""
    name = f"{row['task']} c={row['concurrency']}"
    if row["concurrency"] == 1:
        return [Target(f"{name}: p50 added over the floor < {ADDED_P50_MS} ms", "added_p50_ms",
                       ADDED_P50_MS, at_least=False, unit="ms", rounds="added_p50_rounds")]
    return [Target(f"{name}: throughput >= {FLOOR_SHARE:.0%} of the floor", "vs_floor", FLOOR_SHARE,
                   at_least=True),
            Target(f"{name}: throughput >= {WEBHOOK_FACTOR}x webhook", "vs_webhook", WEBHOOK_FACTOR,
                   at_least=True)]


def resource_targets(results):
    """The targets of the other workloads, each with the run's value: [(Target, value)]."""
    s, b, r = results["sessions"], results["big_output"], results["reload"]
    got = []
    if r is not None:
        got.append((Target(f"hot reload: rename to served p99 < {RELOAD_P99_MS} ms", None, RELOAD_P99_MS,
                           at_least=False, unit="ms"), r["p99_ms"]))
    m = results.get("many_tasks")
    if m is not None:
        got.append((Target(f"{m['tasks']} tasks: reload to first answer (max) < {MANY_RELOAD_MS} ms", None,
                           MANY_RELOAD_MS, at_least=False, unit="ms"), m["reload_max_ms"]))
        got.append((Target(f"{m['tasks']} tasks: RSS after 10 + 10 API documents < {MANY_DOCS_RSS_MIB} MB",
                           None, MANY_DOCS_RSS_MIB, at_least=False, unit="MB"),
                    m["rss_after_docs_kib"] / 1024))
    got.append((Target(f"{s['count']} retained sessions under {SESSIONS_RSS_MIB} MB RSS", None,
                       SESSIONS_RSS_MIB, at_least=False, unit="MB"), s["rss_kib"] / 1024))
    got.append((Target(f"50 MB of output under {BIG_OUTPUT_GROWTH_MIB} MB RSS growth", None,
                       BIG_OUTPUT_GROWTH_MIB, at_least=False, unit="MB"),
                (b["hwm_kib"] - b["rss_before_kib"]) / 1024))
    z = results.get("sleepers")  # runs made before this benchmark have none
    if z is not None:
        got.append((Target(f"{z['count']} sleeping runs under {SLEEPERS_RSS_MIB} MB RSS", None,
                           SLEEPERS_RSS_MIB, at_least=False, unit="MB"), z["rss_kib"] / 1024))
        got.append((Target(f"{z['count']} sleeping runs: service CPU < {SLEEPERS_CPU:.0%} of a core",
                           None, SLEEPERS_CPU * 100, at_least=False, unit="%"), z["cpu_share"] * 100))
    return got


def fmt_ms(x):
    return f"{x:.2f}"


def with_rounds(median, rounds):
    """A median ratio, with the range of the rounds it is the median of when there are several."""
    if len(rounds) < 2:
        return f"{median:.3f}"
    return f"{median:.3f} (rounds {min(rounds):.2f} to {max(rounds):.2f})"


def report(results):
    """The table and the targets, as markdown; returns the number of missed targets."""
    m = results["machine"]
    print(f"\n## celery-service benchmark ({results['mode']}, cargo profile "
          f"{results.get('profile', 'release')})\n")
    print(f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}. "
          f"Each number is the median of {results['reps']} run(s) of {results['seconds']} s; "
          "each ratio is the median of the ratios of runs made back to back.\n")
    print("| task | conc. | ours req/s | floor req/s | webhook req/s | ours/floor | ours/webhook "
          "| p50 ours / floor / webhook (ms) | p99 ours / floor / webhook (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    targets = []
    for row in results["sync"]:
        o, f, w = row["ours"], row["floor"], row["webhook"]
        wr = f"{w['rps']:.0f}" if w else "n/a"
        vs_floor, vs_peer = row["vs_floor"], row["vs_webhook"]
        p50 = " / ".join(fmt_ms(x["p50_ms"]) if x else "n/a" for x in (o, f, w))
        p99 = " / ".join(fmt_ms(x["p99_ms"]) if x else "n/a" for x in (o, f, w))
        print(f"| {row['task']} | {row['concurrency']} | {o['rps']:.0f} | {f['rps']:.0f} | {wr} "
              f"| {vs_floor:.2f} | {'n/a' if vs_peer is None else f'{vs_peer:.2f}'} | {p50} | {p99} |")
        for t in row_targets(row):
            value = row[t.key]
            if value is None:
                targets.append((t.name, False, "n/a"))
            elif t.unit:
                targets.append((t.name, t.met(value), f"{value:.3f} {t.unit}"))
            else:
                targets.append((t.name, t.met(value), with_rounds(value, row[t.rounds])))
    print("\nCPU time per call in µs, user + system: the server itself + the commands it ran "
          "(+ the load generator). For the floor: the spawning loop + its children.\n")
    print("| task | conc. | ours | floor | webhook | ours − floor (server overhead) |")
    print("|---|---:|---|---|---|---:|")
    for row in results["sync"]:
        o, f, w = row["ours"], row["floor"], row["webhook"]
        cell = lambda x: "n/a" if not x else (f"{x['self_us']:.0f} + {x['children_us']:.0f}"
                                              + (f" (+{x['client_us']:.0f})" if x["client_us"] else ""))
        print(f"| {row['task']} | {row['concurrency']} | {cell(o)} | {cell(f)} | {cell(w)} "
              f"| {o['self_us'] - f['self_us']:.0f} |")
    a, q = results["async"], results["query"]
    s, b = results["sessions"], results["big_output"]
    growth = (b["hwm_kib"] - b["rss_before_kib"]) / 1024
    print("\n| other workload | result |")
    print("|---|---|")
    print(f"| async submit + poll every 1 ms until done, conc. 16 | {a['rps']:.0f} sessions/s, "
          f"p50 {fmt_ms(a['p50_ms'])} ms, p99 {fmt_ms(a['p99_ms'])} ms |")
    print(f"| `/async/query` of one session among {s['count']} retained, conc. 16 | {q['rps']:.0f} req/s, "
          f"p50 {fmt_ms(q['p50_ms'])} ms, p99 {fmt_ms(q['p99_ms'])} ms |")
    print(f"| RSS idle / with {s['count']} retained sessions | {s['rss_before_kib'] / 1024:.1f} MB / "
          f"{s['rss_kib'] / 1024:.1f} MB |")
    print(f"| task printing 50 MB (~500 000 lines): RSS before / peak (VmHWM) | "
          f"{b['rss_before_kib'] / 1024:.1f} MB / {b['hwm_kib'] / 1024:.1f} MB "
          f"(+{growth:.1f} MB; {b['seconds']:.2f} s, {b['log_bytes'] / 1e6:.0f} MB logged) |")
    z = results.get("sleepers")
    if z is not None:
        print(f"| {z['count']} async runs of `sleep 20` at once: submitted in / RSS / service CPU "
              f"while they sleep / shutdown ending them | {z['submit_s']:.2f} s / {z['rss_kib'] / 1024:.1f} MB / "
              f"{z['cpu_share']:.2%} of a core over {z['window_s']:.1f} s / {z['shutdown_s']:.2f} s |")
    r = results["reload"]
    reload_text = ("n/a (reload not merged)" if r is None else
                   " / ".join(f"{r[k + '_ms']:.1f}" for k in ("p50", "p90", "p99", "max")) + " ms")
    print(f"| hot reload: rename to served (p50 / p90 / p99 / max) | {reload_text} |")
    m = results.get("many_tasks")
    if m is not None:
        print(f"| {m['tasks']} tasks: reload to first answer (p50 / max); first `/openapi.json`; "
              f"RSS before / after 10 + 10 documents | {m['reload_p50_ms']:.1f} / {m['reload_max_ms']:.1f} ms; "
              f"{m['first_openapi_json_ms']:.0f} ms ({m['openapi_json_bytes'] / 1e6:.1f} MB); "
              f"{m['rss_start_kib'] / 1024:.1f} / {m['rss_after_docs_kib'] / 1024:.1f} MB |")
    for t, value in resource_targets(results):
        targets.append((t.name, t.met(value), f"{value:.1f} {t.unit}"))
    print("\n| target | result | measured |")
    print("|---|---|---|")
    for name, ok, value in targets:
        print(f"| {name} | {'PASS' if ok else 'MISS'} | {value} |")
    return sum(1 for _, ok, _ in targets if not ok)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="1 s per measurement, once (CI)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    ap.add_argument("--profile", default="release",
                    help="the cargo profile of the service binary: release (fat LTO, what users "
                         "install; the default), release-fast (the crate rebuilds in under half the "
                         "time, a few percent slower) or dev (CI's short run: the tests' binary)")
    opts = ap.parse_args()
    global SERVICE
    # Cargo puts the dev profile's output in target/debug, every other profile's under its name.
    SERVICE = ROOT / "target" / ("debug" if opts.profile == "dev" else opts.profile) / "celery-service"
    seconds, reps = (1.0, 1) if opts.short else (2.0, 7)
    results = {"machine": machine(), "mode": "short" if opts.short else "full", "seconds": seconds,
               "reps": reps, "profile": opts.profile}
    workdir = tempfile.mkdtemp(prefix="cs-bench-")
    ours = peer = None
    try:
        if not opts.no_build:
            build(opts.profile)
        results.update(identity())
        ours = Service(workdir, "main")
        if shutil.which("webhook"):
            peer = Webhook(workdir)
        else:
            log("webhook is not installed (apt-get install webhook): the peer column will be n/a")
        log("sync calls: ours, floor, webhook…")
        sync_matrix(ours, peer, seconds, reps, results)
        log("async submit + poll…")
        async_poll(ours, seconds, results)
        ours.stop()
        ours = None
        log(f"{SESSIONS} retained sessions…")
        sessions_and_query(workdir, seconds, results)
        log("50 MB of output…")
        big_output(workdir, results)
        log(f"{SLEEPERS} sleeping runs…")
        sleepers(workdir, SLEEPERS, 3.0 if opts.short else 10.0, results)
        log("hot reload latency…")
        reload_latency(results)
        log(f"{MANY_TASKS} tasks: reload and API document…")
        many_tasks(results)
    except (Broken, subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        log(f"bench: BROKEN: {e}")
        return 1
    finally:
        for p in (ours, peer):
            if p:
                p.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    missed = report(results)
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2))
    print(f"\n{missed} target(s) missed" if missed else "\nevery target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
