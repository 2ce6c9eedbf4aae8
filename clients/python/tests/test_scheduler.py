"""DiscoveryScheduler as beat runs it (in this process, against the real service and a real
socket that never answers), one client per worker process, and the check of CELERY_SERVICE."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from celery_service_client.celery import ENTRY_PREFIX, DiscoveryScheduler, shared_client
from celery_service_client.contrib.django import settings_errors

from harness import Service, poll, task

StartService = Callable[[str], Service]


def scheduler(url: str, dir: Path) -> DiscoveryScheduler:
    app = Celery("scheduler-test", set_as_current=False)
    app.conf.update(
        celery_service_url=url,
        celery_service_refresh_interval=0.2,
        beat_schedule={"mine": {"task": "proj.cleanup", "schedule": 30.0}},
    )
    return DiscoveryScheduler(app=app, schedule_filename=str(dir / "beat-schedule"))


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that takes connections and never answers (a hung service)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_hung_service_never_holds_up_beat(silent: str, tmp_path: Path) -> None:
    s = scheduler(silent, tmp_path)
    try:
        for _ in range(5):
            started = time.monotonic()
            delay = s.tick()
            # /discovery is being read (and hangs) on the scheduler's own thread.
            assert time.monotonic() - started < 0.5 and delay <= 1.0
        assert "mine" in s.schedule
        assert not any(name.startswith(ENTRY_PREFIX) for name in s.schedule)
    finally:
        s.close()


def test_the_last_good_schedule_stays_while_the_service_is_down(
    start_service: StartService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = start_service(task("nightly", 'schedule: "30 2 * * 1-5"'))
    s = scheduler(service.url, tmp_path)
    name = f"{ENTRY_PREFIX}probe/nightly"
    try:

        def merged() -> bool:
            s.tick()
            return name in s.schedule

        poll("the entry from /discovery in beat's schedule", merged, timeout=10)
        service.close()
        with caplog.at_level(logging.WARNING, logger="celery_service_client.celery"):
            poll(
                "a failed read of /discovery",
                lambda: "cannot read /discovery, schedule kept" in caplog.text,
                timeout=10,
            )
        s.tick()
        assert name in s.schedule and "mine" in s.schedule
    finally:
        s.close()


def test_one_client_per_worker_process() -> None:
    app = Celery("shared-test", set_as_current=False)
    app.conf.celery_service_url = "http://127.0.0.1:9"
    client = shared_client(app)
    assert shared_client(app) is client
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a prefork pool's child: its own client, kept for its polls
        mine = shared_client(app)
        ok = mine is not client and shared_client(app) is mine
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read)
    assert shared_client(app) is client


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"URL": "http://cs:8080", "TOKN": "x"}, "unknown key 'TOKN'"),
        ({}, '["URL"] must be'),
        ({"URL": "cs:8080"}, '["URL"] must be'),
        ({"URL": "http://cs", "TOKEN": ""}, '["TOKEN"] must be a non-empty string'),
        ({"URL": "http://cs", "TIMEOUT": 0}, '["TIMEOUT"] must be'),
        ({"URL": "http://cs", "TIMEOUT": (5, "x")}, '["TIMEOUT"] must be'),
        ({"URL": "http://cs", "DEFAULT_SCHEDULE": "0 25 * * *"}, '["DEFAULT_SCHEDULE"]'),
        ({"URL": "http://cs", "DEFAULT_SCHEDULE": "0 1 * *"}, "has 5 fields"),
        ({"URL": "http://cs", "DEFAULT_SCHEDULE": {"minit": "0"}}, "unknown crontab keys"),
        ({"URL": "http://cs", "FROZEN": "a/b"}, '["FROZEN"] must be a list'),
        ({"URL": "http://cs", "RUN_TIMEOUT": -1}, '["RUN_TIMEOUT"] must be'),
        ([], "must be a dict"),
    ],
)
def test_the_settings_check_names_what_is_wrong(settings: object, problem: str) -> None:
    problems = settings_errors(settings)
    assert len(problems) == 1 and problem in problems[0], problems


def test_good_settings_pass_the_check() -> None:
    good = {
        "URL": "https://cs.example:8443",
        "TOKEN": "t",
        "TIMEOUT": [3, None],
        "DEFAULT_SCHEDULE": {"minute": "0", "hour": "1"},
        "FROZEN": ["a/b"],
        "RUN_TIMEOUT": 60,
        "POLL_INTERVAL": 0.5,
    }
    assert settings_errors(good) == []


def test_the_shared_client_follows_the_settings() -> None:
    a = Celery("shared-a", set_as_current=False)
    a.conf.celery_service_url = "http://127.0.0.1:9"
    b = Celery("shared-b", set_as_current=False)
    b.conf.celery_service_url = "http://127.0.0.1:10"
    assert shared_client(a).base_url == "http://127.0.0.1:9"
    assert shared_client(b).base_url == "http://127.0.0.1:10"
    b.conf.celery_service_url = "http://127.0.0.1:9"
    assert shared_client(b) is shared_client(a)
