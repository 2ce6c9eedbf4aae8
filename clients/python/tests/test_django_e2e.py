"""The Django side as the platform runs it, end to end: the test project in tests/djangoproject
(SQLite, django_celery_beat migrated), a real redis-server, a Celery worker on the default
prefork pool with one process, beat on django-celery-beat's DatabaseScheduler, and the real
service with a token.

The tests run in file order: beat starts in the first, its scheduled run is checked in the
last, so the wait for beat's first minute boundary overlaps the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from celery_service_client import Client, Forbidden, Session, Unauthorized
from celery_service_client.celery import TASK_NAME, is_skipped

from harness import HERE, CeleryProcess, Redis, Service, celery_process, poll, task

PROJECT = HERE / "djangoproject"
TOKEN = "s3cret-token"
READ_TOKEN = "peek-token"
EVERY_MINUTE = {
    "minute": "*",
    "hour": "*",
    "day_of_week": "*",
    "day_of_month": "*",
    "month_of_year": "*",
}


def yaml(with_gone: bool = True) -> str:
    text = (
        task("tick", 'schedule: "* * * * *"\nempty_param: ["--from-beat", "two words"]')
        + task("off", 'enable: false\nschedule: "30 2 * * 1-5"')
        + task("plain")
        + task("frozen", 'schedule: "0 4 * * *"')
        + task("slow", script="slow.sh")
        + task("solo", "concurrency_policy: forbid", script="hang.sh")
    )
    if with_gone:
        text += task("gone", 'schedule: {minute: "15", hour: "3"}\nempty_param: ["x"]')
    return text


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    args = ["--auth-token", TOKEN, "--read-token", READ_TOKEN]
    s = Service(tmp_path_factory.mktemp("django-service"), yaml(), args=args)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(service: Service) -> Iterator[Client]:
    with Client(service.url, token=TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, redis_server: Redis, service: Service
) -> dict[str, str]:
    db = tmp_path_factory.mktemp("django-db") / "db.sqlite3"
    return {
        "CS_TEST_DB": str(db),
        # A database of its own on the shared redis-server: these results only.
        "CS_TEST_BROKER": redis_server.url.rsplit("/", 1)[0] + "/1",
        "CS_TEST_SERVICE_URL": service.url,
        "CS_TEST_TOKEN": TOKEN,
        "DJANGO_SETTINGS_MODULE": "proj.settings",
    }


def manage(env: dict[str, str], *args: str) -> str:
    """``python manage.py <args>`` in the test project; its stdout (fails on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def django_project(env: dict[str, str]) -> Iterator[Any]:
    """The project migrated, and Django set up in this process on the same database."""
    manage(env, "migrate", "--noinput")
    saved = dict(os.environ)
    os.environ.update(env)
    sys.path.insert(0, str(PROJECT))
    import django

    django.setup()
    import proj

    yield proj
    os.environ.clear()
    os.environ.update(saved)


def rows() -> dict[str, Any]:
    from django_celery_beat.models import PeriodicTask

    return {t.name: t for t in PeriodicTask.objects.select_related("crontab").all()}


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], django_project: Any
) -> Iterator[CeleryProcess]:
    # The default pool (prefork) with one process: the poller must never block it.
    args = ["worker", "--concurrency=1", "--loglevel=INFO", "--hostname=django@%h"]
    args += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    dir = tmp_path_factory.mktemp("django-worker")
    with celery_process(dir, "worker", args, env, " ready.", "proj", PROJECT) as w:
        yield w


@pytest.fixture(scope="module")
def beat(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], django_project: Any
) -> Iterator[CeleryProcess]:
    dir = tmp_path_factory.mktemp("django-beat")
    args = ["beat", "--loglevel=INFO", "-S", "django_celery_beat.schedulers:DatabaseScheduler"]
    with celery_process(dir, "beat", args, env, "beat: Starting", "proj", PROJECT) as b:
        yield b


def test_sync_creates_the_rows(
    env: dict[str, str], django_project: Any, request: pytest.FixtureRequest
) -> None:
    assert "System check identified no issues" in manage(env, "check")
    dry = manage(env, "celery_service_sync", "--dry-run")
    assert "would create celery-service:probe/tick" in dry
    assert "(dry run: nothing written)" in dry
    assert rows() == {}

    out = manage(env, "celery_service_sync")
    assert "4 created, 0 updated, 0 unchanged, 0 deleted" in out, out
    found = rows()
    # No crontab and no DEFAULT_SCHEDULE: plain, slow and solo get no row.
    assert set(found) == {
        f"celery-service:probe/{name}" for name in ("tick", "off", "frozen", "gone")
    }
    tick = found["celery-service:probe/tick"]
    assert (tick.task, tick.enabled) == (TASK_NAME, True)
    assert json.loads(tick.args) == ["probe/tick", ["--from-beat", "two words"]]
    assert json.loads(tick.kwargs) == {"scheduled": True, "crontab": EVERY_MINUTE}
    cron = found["celery-service:probe/off"].crontab
    assert (cron.minute, cron.hour, cron.day_of_week, str(cron.timezone)) == (
        "30",
        "2",
        "1-5",
        "UTC",
    )
    assert found["celery-service:probe/off"].enabled is False
    gone = found["celery-service:probe/gone"]
    assert (gone.crontab.minute, gone.crontab.hour) == ("15", "3")
    # Again: nothing to change.
    assert "0 created, 0 updated, 4 unchanged" in manage(env, "celery_service_sync")
    # Beat starts now, on the rows, so that its first tick comes while the next tests run.
    request.getfixturevalue("beat")
    request.getfixturevalue("worker")


def test_tokens(service: Service) -> None:
    with Client(service.url) as anonymous, pytest.raises(Unauthorized) as err:
        anonymous.discovery()
    assert err.value.status == 401
    with Client(service.url, token=READ_TOKEN) as reader:
        assert any(e.url == "probe/tick" for e in reader.discovery())
        with pytest.raises(Forbidden) as denied:
            reader.run_async("probe/plain", [])
    assert denied.value.status == 403 and "read-only" in denied.value.msg
    with pytest.raises(ValueError, match="empty"):
        Client(service.url, token="")


def test_two_long_runs_and_a_quick_one_on_one_worker_process(
    django_project: Any, worker: CeleryProcess, client: Client
) -> None:
    assert "concurrency: 1 (prefork)" in worker.text()
    app = django_project.celery_app
    slow = [app.send_task(TASK_NAME, args=("probe/slow", ["8"])) for _ in range(2)]
    quick = app.send_task(TASK_NAME, args=("probe/plain", ["quick"]))
    done = Session.from_json(quick.get(timeout=20))
    assert done.ok and done.message == "recorded 1 args"
    # The quick run ended while both long ones were still running and being polled.
    running = [s for s in client.sessions() if s.task == "probe/slow"]
    assert len(running) == 2 and not any(s.done for s in running), running
    assert not any(r.ready() for r in slow)
    for r in slow:
        final = Session.from_json(r.get(timeout=30))
        assert final.ok and final.message == "slept 8 s"
    assert done.end_at is not None
    assert all(
        s.end_at is not None and s.end_at > done.end_at
        for s in client.sessions()
        if s.task == "probe/slow"
    )


def test_an_overlapping_tick_of_a_forbidding_task_is_skipped(
    django_project: Any, worker: CeleryProcess, client: Client
) -> None:
    running = client.run_async("probe/solo")
    try:
        app = django_project.celery_app
        result = app.send_task(
            TASK_NAME, ("probe/solo", []), {"scheduled": True, "crontab": EVERY_MINUTE}
        )
        outcome = result.get(timeout=20)
        assert result.status == "SUCCESS"
        assert is_skipped(outcome), outcome
        assert running in str(outcome["reason"]) and "forbid" in str(outcome["reason"])
        assert "probe/solo skipped" in worker.text()
        # Nothing else started: the one session of probe/solo is the one we started.
        assert [s.id for s in client.sessions() if s.task == "probe/solo"] == [running]
    finally:
        client.kill(running)


def test_a_removed_task_loses_its_row_and_a_frozen_one_keeps_it(
    django_project: Any, service: Service, client: Client
) -> None:
    from django.test import override_settings

    from celery_service_client.contrib.django.sync import celery_service_sync

    # An admin freezes probe/frozen and moves it by hand.
    frozen = rows()["celery-service:probe/frozen"]
    frozen.crontab = type(frozen.crontab).objects.create(minute="45", hour="5", timezone="UTC")
    frozen.save()
    before = client.config().generation
    service.write_yaml(yaml(with_gone=False).replace(task("frozen", 'schedule: "0 4 * * *"'), ""))
    poll("the service to reload", lambda: client.config().generation > before, timeout=20)
    assert {e.url for e in client.discovery()}.isdisjoint({"probe/gone", "probe/frozen"})

    from django.conf import settings

    conf = {**settings.CELERY_SERVICE, "FROZEN": ["probe/frozen"]}
    with override_settings(CELERY_SERVICE=conf):
        kept = celery_service_sync(prune=False)
        assert kept.kept == ["celery-service:probe/gone"] and kept.deleted == []
        assert kept.frozen == ["celery-service:probe/frozen"]
        assert "celery-service:probe/gone" in rows()
        report = celery_service_sync()
    assert report.deleted == ["celery-service:probe/gone"]
    assert report.frozen == ["celery-service:probe/frozen"]
    left = rows()
    assert "celery-service:probe/gone" not in left
    cron = left["celery-service:probe/frozen"].crontab
    assert (cron.minute, cron.hour) == ("45", "5")


def test_beat_fires_a_scheduled_run_into_the_results(
    beat: CeleryProcess, worker: CeleryProcess, client: Client
) -> None:
    def fired() -> list[Any] | None:
        records = client.results(task="probe/tick").records
        return [r for r in records if r.done] or None

    # Beat's first tick is at the next minute boundary, up to a minute away.
    [record, *_] = poll("beat's run of probe/tick in /results", fired, timeout=90, every=0.5)
    assert (record.mode, record.status, record.args) == (
        "async",
        "ok",
        ["--from-beat", "two words"],
    )
    assert "Sending due task celery-service:probe/tick (celery_service.run)" in beat.text()
    assert f"started session {record.session_id} (Idempotency-Key probe/tick@" in worker.text()
