#!/usr/bin/env python3
"""Paired A/B of sync-call throughput, for deciding whether a change is worth keeping.

    python3 bench/ab.py BINARY                 # BINARY against the floor
    python3 bench/ab.py OLD NEW                # NEW against OLD
    python3 bench/ab.py OLD NEW --b-args="--workers 2" --task echo-bin --concurrency 64 --pairs 40
    python3 bench/ab.py BIN BIN --b-args="--auth-token t" --header "Authorization: Bearer t"

Each pair runs both sides back to back for `--seconds` (the order alternates between pairs) and
takes the ratio of their calls per second; the median and quartiles of those ratios are printed,
with the median CPU per call of each side. On a VM with a shared host, short pairs track its
drifting speed far better than long runs minutes apart; still, two copies of one binary gave a
median of 1.007 over 30 pairs, quartiles 0.975 and 1.074, so trust only differences of a few
percent, over 30 pairs or more (BENCHMARKS.md).
Build the binaries first (`cargo build --release`, then copy target/release/celery-service).
"""

import argparse
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's own helpers)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="a celery-service binary")
    ap.add_argument("b", nargs="?", help="a second binary; without it A is compared with the floor")
    ap.add_argument("--a-args", default="",
                    help="extra `run` flags for A; write --a-args=\"--flag value\" (with `=`: a value "
                         "that starts with -- is otherwise taken for an option of ab.py)")
    ap.add_argument("--b-args", default="", help="extra `run` flags for B; the same form")
    ap.add_argument("--header", action="append", default=[],
                    help="a `Name: value` header on every request to both sides (e.g. the bearer "
                         "token of a side started with --auth-token); repeatable")
    ap.add_argument("--task", default="echo-sh", choices=sorted(run.FLOOR))
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=1.0)
    o = ap.parse_args()
    if o.pairs < 2:
        ap.error("--pairs must be at least 2 (the quartiles need two ratios)")
    if not run.LOADGEN.exists():
        sys.exit(f"build the load generator first: {run.LOADGEN} is missing (python3 bench/run.py builds it)")
    workdir = tempfile.mkdtemp(prefix="cs-ab-")
    sides = []
    try:
        for name, binary, extra in (("A", o.a, o.a_args), ("B", o.b, o.b_args)):
            if binary:
                sides.append((name, run.Service(workdir, name, Path(binary).resolve(), shlex.split(extra))))
        names = [name for name, _ in sides] if len(sides) == 2 else ["floor", "A"]

        def measure(name):
            if name == "floor":
                return run.measure("floor", o.task, o.concurrency, o.seconds)
            svc = dict(sides)[name]
            return run.measure("ours", svc.sync_target(o.task), o.concurrency, o.seconds,
                               headers=o.header)

        ratios, cpu = [], {n: [] for n in names}
        for i in range(o.pairs):
            got = {n: measure(n) for n in (names if i % 2 == 0 else names[::-1])}
            ratios.append(got[names[1]]["rps"] / got[names[0]]["rps"])
            for n in names:
                cpu[n].append((got[n]["self_us"], got[n]["children_us"]))
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(f"{o.task} at concurrency {o.concurrency}, {o.pairs} pairs of {o.seconds:g} s: "
              f"{names[1]}/{names[0]} calls/s median {statistics.median(ratios):.3f} "
              f"(quartiles {q1:.3f} to {q3:.3f})")
        for n in names:
            own = statistics.median(c[0] for c in cpu[n])
            children = statistics.median(c[1] for c in cpu[n])
            print(f"  {n}: CPU per call {own:.0f} µs itself + {children:.0f} µs children")
    except run.Broken as e:
        sys.exit(f"ab: BROKEN: {e}")
    finally:
        for _, svc in sides:
            svc.stop()


if __name__ == "__main__":
    main()
