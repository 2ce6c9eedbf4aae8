"""End to end: the real service, redis-server, a Celery worker and beat, all as processes.

Beat runs ``DiscoveryScheduler`` and the worker the package's task, configured by
``e2e_app.py`` as a Django project would. The tests run in file order so that the one-minute
wait for beat's first tick overlaps the others: beat starts in the first test, the scheduled
runs are checked in the last.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.signals import before_task_publish

from celery_service_client import Client, Session
from celery_service_client.celery import ENTRY_PREFIX, PUBLISHED_AT_HEADER, TASK_NAME

from e2e_app import make_app
from harness import CeleryProcess, Redis, Service, celery_process, pid_gone, poll, task

GIVE_UP = 4.0


def yaml(late_enabled: bool) -> str:
    return (
        task("tick", 'schedule: "* * * * *"\nempty_param: ["--from-beat", "two words"]')
        + task(
            "late",
            f'enable: {str(late_enabled).lower()}\nschedule: {{minute: "*"}}\n'
            'empty_param: ["late"]',
        )
        + task("record", "enable: false")
        + task("hang", "enable: false", script="hang.sh")
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("e2e-service"), yaml(late_enabled=False))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(service: Service) -> Iterator[Client]:
    with Client(service.url) as c:
        yield c


@pytest.fixture(scope="module")
def env(redis_server: Redis, service: Service) -> dict[str, str]:
    return {
        "CS_TEST_BROKER": redis_server.url,
        "CS_TEST_SERVICE_URL": service.url,
        "CS_TEST_GIVE_UP": str(GIVE_UP),
    }


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> Iterator[CeleryProcess]:
    # The default pool (prefork) with one process: polls are messages, never a blocked process.
    args = ["worker", "--concurrency=1", "--loglevel=INFO", "--hostname=e2e@%h"]
    args += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    with celery_process(tmp_path_factory.mktemp("worker"), "worker", args, env, " ready.") as w:
        yield w


@pytest.fixture(scope="module")
def beat(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[CeleryProcess]:
    dir = tmp_path_factory.mktemp("beat")
    args = ["beat", "--loglevel=INFO", f"--schedule={dir / 'beat-schedule'}"]
    with celery_process(dir, "beat", args, env, "schedule from /discovery") as b:
        yield b


@pytest.fixture(scope="module")
def beat2(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[CeleryProcess]:
    """A second beat on the same schedule, as when two hosts run beat by mistake."""
    dir = tmp_path_factory.mktemp("beat2")
    args = ["beat", "--loglevel=INFO", f"--schedule={dir / 'beat-schedule'}"]
    with celery_process(dir, "beat", args, env, "schedule from /discovery") as b:
        yield b


@pytest.fixture(scope="module")
def app(env: dict[str, str]) -> Celery:
    return make_app(env["CS_TEST_BROKER"], env["CS_TEST_SERVICE_URL"])


def test_beat_follows_the_yaml(
    beat: CeleryProcess, worker: CeleryProcess, service: Service
) -> None:
    log = beat.text()
    assert f"added ['{ENTRY_PREFIX}probe/tick']" in log
    # Disabled tasks (late, record, hang, the built-in counter) are not scheduled.
    assert "probe/late" not in log and "probe/record" not in log

    # Enable `late` in the YAML: the running service reloads it, the running beat reads it.
    service.write_yaml(yaml(late_enabled=True))
    beat.wait_for(f"added ['{ENTRY_PREFIX}probe/late']", timeout=20)


def test_a_second_beat_reads_the_same_schedule(beat2: CeleryProcess) -> None:
    # Started early so that it fires the same ticks as the first; checked in the last test.
    assert f"'{ENTRY_PREFIX}probe/tick'" in beat2.text()


def test_a_run_returns_its_final_session(
    app: Celery, worker: CeleryProcess, service: Service
) -> None:
    result = app.send_task(TASK_NAME, args=("probe/record", ["by hand", "$HOME"]))
    final = result.get(timeout=30)
    assert isinstance(final, dict)
    session = Session.from_json(final)
    assert session.done and session.ok and session.exit_code == 0
    assert (session.task, session.args) == ("probe/record", ["by hand", "$HOME"])
    assert session.message == "recorded 2 args"
    assert (service.out / f"{session.id}.argv").read_text() == "by hand\n$HOME\n"
    # Not a scheduled run: its key is the Celery task's id.
    assert f"(Idempotency-Key probe/record@celery-task:{result.id})" in worker.text()


DAILY_1AM = {
    "minute": "0",
    "hour": "1",
    "day_of_week": "*",
    "day_of_month": "*",
    "month_of_year": "*",
}


def key_in_log(worker: CeleryProcess, session_id: str) -> str:
    m = re.search(rf"started session {session_id} \(Idempotency-Key ([^)]*)\)", worker.text())
    assert m is not None, worker.text()
    return m.group(1)


def test_a_scheduled_run_is_keyed_on_its_tick(app: Celery, worker: CeleryProcess) -> None:
    seen: list[dict[str, Any]] = []

    def record(sender: object = None, headers: Any = None, **_: object) -> None:
        if sender == TASK_NAME:
            seen.append(dict(headers))

    before_task_publish.connect(record, weak=False)
    try:
        # As beat sends a daily entry: its kwargs, and the publish time install() stamps.
        on_time = app.send_task(
            TASK_NAME, ("probe/record", []), {"scheduled": True, "crontab": DAILY_1AM}
        )
        # A tick published hours late (beat catching up) still stands for its 01:00.
        late = app.send_task(
            TASK_NAME,
            ("probe/record", []),
            {"scheduled": True, "crontab": DAILY_1AM},
            headers={PUBLISHED_AT_HEADER: "2026-01-01T05:17:30+00:00"},
        )
    finally:
        before_task_publish.disconnect(record)
    assert PUBLISHED_AT_HEADER in seen[0]
    assert seen[1][PUBLISHED_AT_HEADER] == "2026-01-01T05:17:30+00:00"

    now = datetime.now(timezone.utc)
    last_1am = now.replace(hour=1, minute=0, second=0, microsecond=0)
    if last_1am > now:
        last_1am -= timedelta(days=1)
    first = Session.from_json(on_time.get(timeout=30))
    assert key_in_log(worker, first.id) == f"probe/record@{last_1am:%Y-%m-%dT%H:%MZ}"
    second = Session.from_json(late.get(timeout=30))
    assert key_in_log(worker, second.id) == "probe/record@2026-01-01T01:00Z"


def test_a_hung_run_is_killed_when_the_poller_gives_up(
    app: Celery, worker: CeleryProcess, service: Service, client: Client
) -> None:
    started = time.monotonic()
    result = app.send_task(TASK_NAME, args=("probe/hang", []))
    pids_file = poll("the hung script's pids", lambda: next(service.out.glob("*.pids"), None), 20)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2 and not any(pid_gone(p) for p in pids)
    assert "sleep" in Path(f"/proc/{pids[1]}/cmdline").read_text()

    final = result.get(timeout=30)
    assert time.monotonic() - started >= GIVE_UP
    session = Session.from_json(final)
    assert session.id == pids_file.stem
    assert session.done and session.error.startswith("killed on request"), session
    assert client.query(session.id) == session
    # The script and its child: no process left (or a zombie its parent has yet to reap).
    for pid in pids:
        poll(f"pid {pid} to be gone", partial(pid_gone, pid), timeout=10)


def results(redis_server: Redis) -> list[dict[str, Any]]:
    """Every finished result in the Celery result backend (the real one: redis)."""
    r = redis.Redis.from_url(redis_server.url)
    found = []
    for key in r.scan_iter("celery-task-meta-*"):
        raw = r.get(key)
        meta = json.loads(raw) if raw else {}
        if meta.get("status") == "SUCCESS":
            found.append(meta)
    return found


def test_scheduled_tasks_fire_with_their_empty_param(
    redis_server: Redis, beat: CeleryProcess, worker: CeleryProcess, service: Service
) -> None:
    def fired() -> dict[str, dict[str, Any]] | None:
        by_task = {m["result"]["task"]: m["result"] for m in results(redis_server)}
        if "probe/tick" in by_task and "probe/late" in by_task:
            return by_task
        return None

    # Beat's first tick is at the next minute boundary, up to a minute away; `late` fires at the
    # first boundary after beat read the edit, the same one unless the edit landed just after it.
    by_task = poll("beat's runs of probe/tick and probe/late", fired, timeout=90, every=0.5)
    assert f"Sending due task {ENTRY_PREFIX}probe/tick ({TASK_NAME})" in beat.text()

    for url, argv in (("probe/tick", ["--from-beat", "two words"]), ("probe/late", ["late"])):
        session = Session.from_json(by_task[url])
        assert session.ok and session.args == argv
        assert (service.out / f"{session.id}.argv").read_text().splitlines() == argv
        # The key names the minute beat fired for (the run starts within seconds of it).
        tick = session.start_at.astimezone(timezone.utc).replace(second=0, microsecond=0)
        assert key_in_log(worker, session.id) == f"{url}@{tick:%Y-%m-%dT%H:%MZ}"


def test_two_beats_firing_the_same_tick_start_one_run(
    beat: CeleryProcess, beat2: CeleryProcess, worker: CeleryProcess, service: Service
) -> None:
    started = re.compile(r"started session (\S+) \(Idempotency-Key (probe/tick@[^)]*)\)")

    def fired_twice() -> dict[str, set[str]] | None:
        by_key: dict[str, list[str]] = {}
        for session_id, key in started.findall(worker.text()):
            by_key.setdefault(key, []).append(session_id)
        twice = {key: set(ids) for key, ids in by_key.items() if len(ids) >= 2}
        return twice or None

    twice = poll("both beats to fire one tick", fired_twice, timeout=90, every=0.5)
    for key, ids in twice.items():
        # Both submissions got the same session: the second key found the first run.
        assert len(ids) == 1, (key, ids)
    # And the service ran it once: one run of probe/tick per tick in its own session list.
    with urllib.request.urlopen(
        urllib.request.Request(f"{service.url}/async/query", data=b"{}", method="POST")
    ) as resp:
        sessions = json.load(resp)["data"]
    for key, ids in twice.items():
        minute = key.split("@", 1)[1]
        runs = [
            s
            for s in sessions
            if s["task"] == "probe/tick"
            and datetime.fromisoformat(s["start_at"])
            .astimezone(timezone.utc)
            .strftime("%Y-%m-%dT%H:%MZ")
            == minute
        ]
        assert [r["id"] for r in runs] == list(ids), (key, runs)
