#!/usr/bin/env python3
"""Judges the benchmark's targets over several runs at once, from the files of `run.py --json`.

    python3 bench/run.py --json a.json; python3 bench/run.py --json b.json; …
    python3 bench/pool.py a.json b.json …

One full run takes the median of 7 rounds per cell. On a VM whose host is shared, one round's
ratio moves by about 5 % either way, so that median moves by 2 to 3 % from run to run, and a
target a few percent away can print MISS in one run and PASS in the next. This pools the rounds of
every run given and, for each target, prints the pooled median with a 95 % confidence interval
(distribution-free: from the order statistics of the rounds) and how many runs missed it alone:

- **met**: the whole interval is on the target's side;
- **missed**: the whole interval is on the wrong side;
- **on the line**: the interval holds the target: more rounds, or a quieter machine, are needed to
  tell which side it is on;
- **too few rounds**: fewer than 6 rounds cannot give a 95 % interval (a `--short` run has one).

Targets without rounds (memory, reload latency) are judged by the worst run. Every run must have
measured the same service binary (its SHA-256 is in the file); `--mixed` pools different builds
anyway, for looking, not for judging. Python 3 standard library only.
"""

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's own target definitions)

LEVEL = 0.95


def median_interval(values, level=LEVEL):
    """A confidence interval for the median of the population `values` were drawn from.

    The k-th smallest and k-th largest of n values bracket the median with probability
    1 - 2 P(B < k), B ~ Binomial(n, 1/2), whatever the distribution. Returns the narrowest such
    interval whose coverage is at least `level`, and its coverage; with too few values for that,
    the whole range and the coverage it has."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("no values")

    def coverage(k):
        below = sum(math.comb(n, i) for i in range(k)) / 2**n
        return 1 - 2 * below

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def verdict(target, lo, hi):
    """met, missed or on the line, for an interval [lo, hi] of the measured value."""
    if target.met(lo) and target.met(hi):
        return "met"
    if not target.met(lo) and not target.met(hi):
        return "missed"
    return "on the line"


def load(paths, mixed):
    """The runs in `paths`, and the set of service binaries they measured."""
    runs = []
    for path in paths:
        try:
            results = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            sys.exit(f"pool: cannot read {path}: {e}")
        if not isinstance(results, dict) or "sync" not in results:
            sys.exit(f"pool: {path} is not a `bench/run.py --json` file (no `sync` table)")
        runs.append(results)
    cells = [(row["task"], row["concurrency"]) for row in runs[0]["sync"]]
    for path, r in zip(paths, runs):
        if [(row["task"], row["concurrency"]) for row in r["sync"]] != cells:
            sys.exit(f"pool: {path} has other sync cells than {paths[0]}; were they made by one run.py?")
    builds = {r.get("service_sha256") for r in runs}
    if None in builds and not mixed:
        sys.exit("pool: a run does not record which binary it measured (made before run.py recorded "
                 "it); pass --mixed to pool it anyway")
    if len(builds) > 1 and not mixed:
        sys.exit(f"pool: the runs measured {len(builds)} different service binaries; "
                 "pass --mixed to pool them anyway")
    return runs, {b or "not recorded" for b in builds}


def fmt(target, value):
    return f"{value:.3f}" + (f" {target.unit}" if target.unit else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="files written by `bench/run.py --json`")
    ap.add_argument("--mixed", action="store_true", help="pool runs of different builds anyway")
    o = ap.parse_args()
    runs, builds = load(o.runs, o.mixed)

    first = runs[0]
    commits = sorted({(r.get("commit") or "not recorded")[:12] + (" (changed tree)" if r.get("tree_changed") else "")
                      for r in runs})
    # Runs made before run.py recorded the cargo profile all measured `release`.
    profiles = sorted({r.get("profile", "release") for r in runs})
    m = first["machine"]
    print(f"## celery-service benchmark: {len(runs)} run(s) pooled\n")
    print(f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}. Build: "
          f"{', '.join(commits)}, cargo profile {', '.join(profiles)}; "
          f"service binary {', '.join(b[:16] for b in sorted(builds))}. Runs started "
          f"{', '.join(r.get('started_at', 'at an unrecorded time') for r in runs)}.\n")
    print(f"| target | rounds | pooled median | {LEVEL:.0%} interval of the median | runs missing it alone "
          "| verdict |")
    print("|---|---:|---:|---|---:|---|")
    tally = Counter()
    for i, row in enumerate(first["sync"]):
        for target in run.row_targets(row):
            rounds, alone = [], 0
            for r in runs:
                own = r["sync"][i]
                # Runs made before the added p50 of every round was kept have only their median.
                got = own.get(target.rounds) or ([own[target.key]] if own[target.key] is not None else [])
                rounds += got
                alone += own[target.key] is None or not target.met(own[target.key])
            if not rounds:
                print(f"| {target.name} | 0 | n/a | n/a | {alone} of {len(runs)} | not measured |")
                tally["not measured"] += 1
                continue
            lo, hi, cover = median_interval(rounds)
            judged = verdict(target, lo, hi) if cover >= LEVEL else "too few rounds"
            tally[judged] += 1
            interval = f"{fmt(target, lo)} to {fmt(target, hi)}"
            if cover < LEVEL:
                interval += f" (the range: {cover:.0%} only)"
            print(f"| {target.name} | {len(rounds)} | {fmt(target, statistics.median(rounds))} | {interval} "
                  f"| {alone} of {len(runs)} | {judged} |")
    # A run made before the reload benchmark existed has no reload target: match them by name.
    per_run = [{t.name: value for t, value in run.resource_targets(r)} for r in runs]
    for target, _ in run.resource_targets(first):
        values = [got[target.name] for got in per_run if target.name in got]
        worst = max(values) if not target.at_least else min(values)
        judged = "met" if target.met(worst) else "missed"
        tally[judged] += 1
        alone = sum(not target.met(v) for v in values)
        print(f"| {target.name} | {len(values)} runs | worst {worst:.1f} {target.unit} | | "
              f"{alone} of {len(values)} | {judged} |")
    print("\n" + ", ".join(f"{n} {v}" for v, n in sorted(tally.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
