#!/usr/bin/env python3
"""Reload latency: how long after a config file is renamed into place its new task answers.

Usage: bench/reload_latency.py <path to a release celery-service binary> [--runs N]

Starts the service on a temporary config, then N times (50 by default) renames a new config over
the old one that adds one task, and measures the time from the rename to the new route answering
200, polling every 2 ms. The time includes the watcher's debounce (`--reload-debounce`, 50 ms by
default). Prints p50/p90/p99/max in milliseconds as one line of JSON. Python 3 stdlib only.
"""

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

POLL_INTERVAL = 0.002
ROUTE_TIMEOUT = 10.0


def config(n):
    """A config with tasks t0..t<n-1>, each answering `echo <name>`."""
    return "".join(
        f"- {{name: t{i}, cluster_type: bench, language: sh, executable: echo t{i}, collected: false}}\n"
        for i in range(n)
    )


def start(binary, workdir):
    """Starts the service in `workdir`; returns the process and its `host:port`."""
    proc = subprocess.Popen(
        [binary, "run", "--address", "127.0.0.1:0", "--log-console"],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # No drain delay at the SIGTERM that ends it (an environment variable, which older
        # builds ignore).
        env={**{k: v for k, v in os.environ.items() if k != "CS_LOG"}, "CS_DRAIN_DELAY": "0s"},
    )
    found = threading.Event()
    address = []

    def drain():
        # Keep reading so the service never blocks on a full pipe.
        for line in proc.stdout:
            m = re.search(r"listening on (\S+)", line)
            if m and not found.is_set():
                address.append(m.group(1))
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    if not found.wait(20):
        proc.kill()
        sys.exit("the service did not start")
    return proc, address[0]


def answers(conn, path):
    conn.request("POST", path, body=b"", headers={"Content-Length": "0"})
    resp = conn.getresponse()
    resp.read()
    return resp.status == 200


def percentile(sorted_values, p):
    """Nearest-rank percentile."""
    rank = max(1, -(-p * len(sorted_values) // 100))
    return sorted_values[int(rank) - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)

    with tempfile.TemporaryDirectory() as workdir:
        cfg = os.path.join(workdir, "external-tasks.yaml")
        tmp = os.path.join(workdir, ".external-tasks.yaml.tmp")
        os.mkdir(os.path.join(workdir, "collect"))
        with open(cfg, "w") as f:
            f.write(config(1))
        proc, address = start(binary, workdir)
        host, port = address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        latencies = []
        try:
            for run in range(1, args.runs + 1):
                with open(tmp, "w") as f:
                    f.write(config(run + 1))
                path = f"/sync/bench/t{run}"
                os.rename(tmp, cfg)
                start_at = time.perf_counter()
                while not answers(conn, path):
                    if time.perf_counter() - start_at > ROUTE_TIMEOUT:
                        sys.exit(f"run {run}: {path} not served within {ROUTE_TIMEOUT} s")
                    time.sleep(POLL_INTERVAL)
                latencies.append((time.perf_counter() - start_at) * 1000)
        finally:
            conn.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    latencies.sort()
    print(
        json.dumps(
            {
                "bench": "reload_latency",
                "runs": len(latencies),
                "p50_ms": round(percentile(latencies, 50), 1),
                "p90_ms": round(percentile(latencies, 90), 1),
                "p99_ms": round(percentile(latencies, 99), 1),
                "max_ms": round(latencies[-1], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
