#!/usr/bin/env python3
"""Cost of a big config: 2,000 tasks.

Usage: bench/many_tasks.py <path to a release celery-service binary> [--tasks N] [--runs N]

Starts the service on a config of N tasks (2,000 by default), then:
- reload to first answer: --runs times (10 by default) renames a config of N+1 tasks over the
  old one and measures the time from the rename to the new task answering 200, polling every
  2 ms (includes the watcher's 50 ms debounce);
- API document memory: ten `GET /openapi.json` and ten `GET /openapi.yaml` (the first of each
  renders the document of this generation), then the service's RSS, and the time of the first
  `/openapi.json`.
Prints one line of JSON. Python 3 stdlib only.
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reload_latency import answers, config, percentile, start  # noqa: E402

POLL_INTERVAL = 0.002
ROUTE_TIMEOUT = 10.0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def get(conn, path):
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        sys.exit(f"GET {path}: {resp.status}")
    return len(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    n = args.tasks

    with tempfile.TemporaryDirectory() as workdir:
        cfg = os.path.join(workdir, "external-tasks.yaml")
        tmp = os.path.join(workdir, ".external-tasks.yaml.tmp")
        os.mkdir(os.path.join(workdir, "collect"))
        with open(cfg, "w") as f:
            f.write(config(n))
        proc, address = start(binary, workdir)
        host, port = address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        latencies = []
        try:
            rss_start = rss_kib(proc.pid)
            for run in range(1, args.runs + 1):
                with open(tmp, "w") as f:
                    f.write(config(n + run))
                path = f"/sync/bench/t{n + run - 1}"
                os.rename(tmp, cfg)
                start_at = time.perf_counter()
                while not answers(conn, path):
                    if time.perf_counter() - start_at > ROUTE_TIMEOUT:
                        sys.exit(f"run {run}: {path} not served within {ROUTE_TIMEOUT} s")
                    time.sleep(POLL_INTERVAL)
                latencies.append((time.perf_counter() - start_at) * 1000)
            t = time.perf_counter()
            json_bytes = get(conn, "/openapi.json")
            first_doc_ms = (time.perf_counter() - t) * 1000
            for _ in range(9):
                get(conn, "/openapi.json")
            yaml_bytes = 0
            for _ in range(10):
                yaml_bytes = get(conn, "/openapi.yaml")
            rss_docs = rss_kib(proc.pid)
        finally:
            conn.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    latencies.sort()
    print(json.dumps({
        "bench": "many_tasks",
        "tasks": n,
        "reload_runs": len(latencies),
        "reload_p50_ms": round(percentile(latencies, 50), 1),
        "reload_max_ms": round(latencies[-1], 1),
        "first_openapi_json_ms": round(first_doc_ms, 1),
        "openapi_json_bytes": json_bytes,
        "openapi_yaml_bytes": yaml_bytes,
        "rss_start_kib": rss_start,
        "rss_after_docs_kib": rss_docs,
    }))


if __name__ == "__main__":
    main()
