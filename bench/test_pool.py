"""Tests of bench/pool.py: the interval of the median against published tables, and whole runs of
the script on result files shaped like `run.py --json` writes them.

    python3 -m unittest discover -s bench -p 'test_*.py'
"""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import pool  # noqa: E402
import run  # noqa: E402


def result_file(folder, name, vs_floor_sh16, binary="b1"):
    """A run's file with every sync row given the same rounds except `echo-sh` at 16."""
    rows = []
    for task in ("echo-bin", "echo-sh"):
        for c in (1, 16, 64):
            rounds = vs_floor_sh16 if (task, c) == ("echo-sh", 16) else [1.0] * 7
            rows.append({"task": task, "concurrency": c,
                         "vs_floor": sorted(rounds)[len(rounds) // 2], "vs_floor_rounds": rounds,
                         "vs_webhook": 1.4, "vs_webhook_rounds": [1.4] * 7,
                         "added_p50_ms": 0.2, "added_p50_rounds": [0.2] * 7})
    results = {"machine": {"nproc": 2, "cpu": "test", "kernel": "test"}, "sync": rows,
               "sessions": {"count": 10000, "rss_kib": 14 * 1024, "rss_before_kib": 7 * 1024},
               "big_output": {"rss_before_kib": 7 * 1024, "hwm_kib": 8 * 1024},
               "reload": {"p99_ms": 70.0}, "service_sha256": binary, "commit": "c" * 40,
               "tree_changed": False, "started_at": "2026-12-01T00:00:00+00:00"}
    path = Path(folder) / name
    path.write_text(json.dumps(results))
    return str(path)


def pool_lines(*args):
    out = subprocess.run([sys.executable, str(BENCH / "pool.py"), *args], capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


class MedianInterval(unittest.TestCase):
    def test_ranks_match_the_published_table(self):
        # 95 % ranks of the median for n = 6, 7, 10, 20, 21 (e.g. Conover, Practical
        # Nonparametric Statistics, table A3): 1-6, 1-7, 2-9, 6-15, 6-16.
        for n, (lo, hi) in {6: (1, 6), 7: (1, 7), 10: (2, 9), 20: (6, 15), 21: (6, 16)}.items():
            got_lo, got_hi, cover = pool.median_interval(range(1, n + 1))
            self.assertEqual((got_lo, got_hi), (lo, hi), f"n={n}")
            self.assertGreaterEqual(cover, 0.95)

    def test_too_few_values_give_the_range_and_say_so(self):
        lo, hi, cover = pool.median_interval([5, 1, 3, 2, 4])
        self.assertEqual((lo, hi), (1, 5))
        self.assertAlmostEqual(cover, 1 - 2 / 32)

    def test_verdicts(self):
        at_least = run.Target("t", "vs_floor", 0.9, at_least=True)
        self.assertEqual(pool.verdict(at_least, 0.91, 0.95), "met")
        self.assertEqual(pool.verdict(at_least, 0.85, 0.89), "missed")
        self.assertEqual(pool.verdict(at_least, 0.89, 0.93), "on the line")
        below = run.Target("t", None, 0.5, at_least=False)
        self.assertEqual(pool.verdict(below, 0.1, 0.2), "met")
        self.assertEqual(pool.verdict(below, 0.4, 0.6), "on the line")


# The rounds below were written around a floor share of 0.9; D moves them to the current one.
D = run.FLOOR_SHARE - 0.9
SH16 = f"echo-sh c=16: throughput >= {run.FLOOR_SHARE:.0%}"


def moved(rounds):
    return [round(x + D, 6) for x in rounds]


class WholeRuns(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def row(self, stdout, name):
        return next(line for line in stdout.splitlines() if line.startswith(f"| {name}"))

    def test_rounds_of_every_run_are_pooled(self):
        # Alone, each run's rounds straddle the line; pooled, 14 rounds put the interval above it.
        a = result_file(self.dir.name, "a.json", moved([0.88, 0.93, 0.94, 0.95, 0.95, 0.96, 0.97]))
        b = result_file(self.dir.name, "b.json", moved([0.89, 0.92, 0.93, 0.94, 0.96, 0.96, 0.98]))
        code, out, err = pool_lines(a)
        self.assertEqual(code, 0, err)
        self.assertIn("| on the line |", self.row(out, SH16))
        code, out, err = pool_lines(a, b)
        self.assertEqual(code, 0, err)
        row = self.row(out, SH16)
        self.assertIn(f"| 14 | {0.945 + D:.3f} | {0.920 + D:.3f} to {0.960 + D:.3f} |", row)
        self.assertTrue(row.endswith("| 0 of 2 | met |"), row)

    def test_a_run_whose_median_missed_is_counted(self):
        a = result_file(self.dir.name, "a.json", moved([0.80, 0.82, 0.84, 0.85, 0.86, 0.87, 0.89]))
        code, out, _ = pool_lines(a)
        self.assertEqual(code, 0)
        self.assertIn("| 1 of 1 | missed |", self.row(out, SH16))

    def test_different_binaries_are_refused_unless_asked(self):
        a = result_file(self.dir.name, "a.json", [1.0] * 7, binary="b1")
        b = result_file(self.dir.name, "b.json", [1.0] * 7, binary="b2")
        code, _, err = pool_lines(a, b)
        self.assertNotEqual(code, 0)
        self.assertIn("2 different service binaries", err)
        code, out, _ = pool_lines("--mixed", a, b)
        self.assertEqual(code, 0)
        self.assertIn("service binary b1, b2", out)

    def test_runs_of_other_cells_are_refused(self):
        a = result_file(self.dir.name, "a.json", [1.0] * 7)
        b = Path(result_file(self.dir.name, "b.json", [1.0] * 7))
        fewer = json.loads(b.read_text())
        fewer["sync"].pop()
        b.write_text(json.dumps(fewer))
        code, _, err = pool_lines(a, str(b))
        self.assertNotEqual(code, 0)
        self.assertIn("b.json has other sync cells", err)

    def test_a_file_that_is_not_a_result_is_named(self):
        bad = Path(self.dir.name) / "bad.json"
        bad.write_text("[1, 2]")
        code, _, err = pool_lines(str(bad))
        self.assertNotEqual(code, 0)
        self.assertIn("bad.json", err)


if __name__ == "__main__":
    unittest.main()
