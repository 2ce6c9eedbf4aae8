#!/usr/bin/env python3
"""The dashboard at scale: 2,000 tasks and 100,000 stored records.

Usage: bench/dashboard.py <celery-service binary> [--tasks N] [--records N] [--repeat N]

Fills the embedded result store before the service starts: the records are written straight into
the SQLite file through the service's own schema (the table and indexes of src/store/sqlite.rs,
each row with the record's JSON document), spread over the last 7 days, a quarter of them in the
last 24 hours. Then, for each page (Tasks, Tasks filtered, Running, a run, History, History
filtered, Config) it measures the time to the whole HTML answer (median and worst of --repeat)
and the bytes the page downloads (its HTML plus the stylesheet and the script it loads).

With Playwright importable (target/test-venv has it) it also opens the Running page and a run's
page in Debian's chromium with 20 runs live and counts the event streams each page holds.
Prints one line of JSON per page, then a summary. Python 3 stdlib (plus Playwright if present).
"""

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    session_id TEXT PRIMARY KEY, path TEXT NOT NULL, status TEXT NOT NULL, done INTEGER NOT NULL,
    start_ms INTEGER NOT NULL, instance TEXT NOT NULL, heartbeat_ms INTEGER NOT NULL,
    kill_requested INTEGER NOT NULL DEFAULT 0, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS results_path_start ON results(path, start_ms);
CREATE INDEX IF NOT EXISTS results_start ON results(start_ms);
CREATE INDEX IF NOT EXISTS results_running ON results(done, heartbeat_ms);
"""
STATUSES = ["ok"] * 8 + ["failed", "killed"]


def config(n):
    lines = ["- {name: slow, cluster_type: bench, language: sh, executable: 'sleep 60', collected: false}\n"]
    lines += [
        f"- {{name: t{i}, cluster_type: bench, language: sh, executable: echo t{i}, "
        f"collected: false, schedule: '*/{(i % 30) + 1} * * * *'}}\n"
        for i in range(n - 1)
    ]
    return "".join(lines)


def fill(db, tasks, records):
    """Writes `records` finished runs of tasks t0..t<tasks-2> into the SQLite file `db`."""
    now = int(time.time() * 1000)
    week = 7 * 24 * 3600 * 1000
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA)
    rows = []
    for _ in range(records):
        task = f"t{random.randrange(tasks - 1)}"
        start = now - (random.randrange(week // 4) if random.random() < 0.25 else random.randrange(week))
        took = random.randrange(50, 120_000)
        status = random.choice(STATUSES)
        sid = str(uuid.uuid4())
        doc = {
            "session_id": sid, "task": task, "cluster_type": "bench", "path": f"bench/{task}",
            "mode": "async", "args": [], "command": f"sh -c 'echo {task}'", "host": "bench",
            "instance": "bench/1/seed", "version": "bench", "status": status, "done": True,
            "start_ms": start, "end_ms": start + took, "duration_ms": took,
            "exit_code": 0 if status == "ok" else (None if status == "killed" else 1),
            "signal": 15 if status == "killed" else None, "stdout_last": task,
            "stderr_last": "", "error": "" if status == "ok" else status,
            "heartbeat_ms": start + took, "kill_requested": False,
        }
        rows.append((sid, f"bench/{task}", status, 1, start, "bench/1/seed", start + took, 0, json.dumps(doc)))
    conn.executemany("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    took = time.perf_counter() - t0
    conn.close()
    return resp.status, body, took


def post(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body=b"[]", headers={"Content-Type": "application/json"})
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def measure(port, pages, repeat):
    assets = sum(len(get(port, p)[1]) for p in ["/ui/assets/ui.css", "/ui/assets/ui.js"])
    out = []
    for name, path in pages:
        times, size = [], 0
        for _ in range(repeat):
            status, body, took = get(port, path)
            assert status == 200, (path, status)
            times.append(took * 1000)
            size = len(body)
        times.sort()
        row = {"page": name, "path": path, "median_ms": round(times[len(times) // 2], 1),
               "worst_ms": round(times[-1], 1), "html_kB": round(size / 1024, 1),
               "download_kB": round((size + assets) / 1024, 1)}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def event_streams(port, run_id):
    """The event streams the Running page and a run's page hold, in Debian's chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    counts = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--no-sandbox"])
        for name, path in [("running", "/ui/running"), ("run", f"/ui/runs/{run_id}")]:
            page = browser.new_page()
            streams = []
            page.on("request", lambda r, s=streams: s.append(r.url) if r.resource_type == "eventsource" else None)
            page.goto(f"http://127.0.0.1:{port}{path}")
            page.wait_for_timeout(3000)
            counts[name] = len(streams)
            page.close()
        browser.close()
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="cs-dashboard-bench-")
    with open(os.path.join(work, "tasks.yaml"), "w") as f:
        f.write(config(args.tasks))
    t0 = time.perf_counter()
    fill(os.path.join(work, "results.db"), args.tasks, args.records)
    print(json.dumps({"filled_records": args.records, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    port = free_port()
    proc = subprocess.Popen(
        [args.binary, "run", "--external-task-config", os.path.join(work, "tasks.yaml"),
         "--collect-dir", work, "--address", f"127.0.0.1:{port}", "--log-dir", os.path.join(work, "logs"),
         "--result-db-file", os.path.join(work, "results.db"), "--max-running", "100"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("the service did not become ready")
            time.sleep(0.1)
        live = [post(port, "/async/bench/slow")["data"] for _ in range(20)]
        pages = [
            ("tasks", "/ui/"), ("tasks filtered", "/ui/?q=t19"), ("running", "/ui/running"),
            ("run", f"/ui/runs/{live[0]}"), ("history", "/ui/history"),
            ("history filtered", "/ui/history?task=bench/t7&status=failed"),
            ("config", "/ui/config"),
        ]
        rows = measure(port, pages, args.repeat)
        streams = event_streams(port, live[0])
        print(json.dumps({
            "tasks": args.tasks, "records": args.records, "live_runs": len(live),
            "worst_ms": max(r["worst_ms"] for r in rows),
            "largest_download_kB": max(r["download_kB"] for r in rows),
            "event_streams_per_page": streams,
        }))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
