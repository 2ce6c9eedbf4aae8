#!/usr/bin/env python3
"""Takes the dashboard screenshots of docs/ (dashboard-tasks.png, dashboard-run.png,
dashboard-history.png) with Debian's chromium through Playwright, from the real binary with a few
runs of each outcome.

Usage: target/test-venv/bin/python3 scripts/dashboard-screenshots.py [binary]
"""

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/browser"))
import conftest  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

EXTRA = """\
- name: check_replication
  cluster_type: Mysql
  language: sh
  executable: "echo checking; exit 1"
  collected: false
  schedule: "*/10 * * * *"
- name: rotate_binlogs
  cluster_type: Mysql
  language: sh
  executable: echo rotated
  collected: false
  schedule: "0 3 * * *"
"""


def post(base, path, body=b"[]"):
    req = urllib.request.Request(base + path, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def seed(db):
    """A day of earlier runs, written into the store through the service's schema (as
    bench/dashboard.py does), so the timeline has something to show."""
    import random
    import sqlite3
    import uuid
    sys.path.insert(0, str(REPO / "bench"))
    from dashboard import SCHEMA
    now = int(time.time() * 1000)
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA)
    rng = random.Random(26)
    every = {"mysql/check-replication": 40, "tendb-cluster/demo1": 90, "redis/backup": 360,
             "mysql/rotate-binlogs": 240, "tendb-cluster/ticker": 120}
    for path, minutes in every.items():
        for k in range(24 * 60 // minutes):
            start = now - (k + 1) * minutes * 60_000 + rng.randrange(60_000)
            took = rng.randrange(2_000, 25 * 60_000)
            status = rng.choice(["ok"] * 6 + ["failed", "killed"])
            sid = str(uuid.uuid4())
            doc = {"session_id": sid, "task": path.split("/")[1], "cluster_type": path.split("/")[0],
                   "path": path, "mode": "async", "args": [], "command": "sh -c ...", "host": "db-ops-1",
                   "instance": "db-ops-1/1/seed", "version": "seed", "status": status, "done": True,
                   "start_ms": start, "end_ms": start + took, "duration_ms": took,
                   "exit_code": 0 if status == "ok" else 1, "signal": None, "stdout_last": "",
                   "stderr_last": "", "error": "" if status == "ok" else status,
                   "heartbeat_ms": start + took, "kill_requested": False}
            conn.execute("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                         (sid, path, status, 1, start, doc["instance"], start + took, 0, json.dumps(doc)))
    conn.commit()
    conn.close()


def main():
    if len(sys.argv) > 1:
        import os
        os.environ["CS_BINARY"] = sys.argv[1]
    conftest.TASKS += EXTRA
    with tempfile.TemporaryDirectory() as tmp:
        seed(Path(tmp) / "results.db")
        gen = conftest.start(Path(tmp))
        service = next(gen)
        base = service.base
        for path in ["tendb-cluster/demo1", "redis/backup", "mysql/check-replication",
                     "mysql/rotate-binlogs"] * 4:
            post(base, "/sync/" + path)
        killed = post(base, "/async/tendb-cluster/ticker", b'["nightly"]')["data"]
        time.sleep(1.5)
        post(base, "/async/kill", json.dumps({"session_id": killed}).encode())
        live = post(base, "/async/tendb-cluster/ticker", b'["replica-2"]')["data"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=conftest.chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(base + "/ui/")
            page.screenshot(path=str(REPO / "docs/dashboard-tasks.png"), full_page=True)
            page.goto(base + f"/ui/runs/{live}")
            page.locator("#output li").nth(12).wait_for()
            page.screenshot(path=str(REPO / "docs/dashboard-run.png"), full_page=True)
            page.goto(base + "/ui/history")
            page.screenshot(path=str(REPO / "docs/dashboard-history.png"), full_page=True)
            browser.close()
        post(base, "/async/kill", json.dumps({"session_id": live}).encode())
        try:
            next(gen)
        except StopIteration:
            pass


if __name__ == "__main__":
    main()
