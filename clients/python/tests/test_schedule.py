"""register_periodic_tasks against the real service: the beat schedule is the YAML's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab, schedule

from celery_service_client import CRONTAB_KEYS, Client, NotFound, TransportError
from celery_service_client.celery import (
    ENTRY_PREFIX,
    TASK_NAME,
    idempotency_key,
    register_periodic_tasks,
    scheduled_tick,
)

from harness import Service, free_port, poll, task

YAML = (
    task("nightly", 'schedule: "30 2 * * 1-5"\nempty_param: ["--nightly", "a b"]')
    + task("office_hours", 'schedule: {minute: "*/15", hour: "8-18"}')
    + task("plain")
    + task("off", 'enable: false\nschedule: "* * * * *"')
)

StartService = Callable[[str], Service]
ClientOf = Callable[[Service], Client]


def app() -> Celery:
    a = Celery("schedule-test", set_as_current=False)
    a.conf.beat_schedule = {
        "mine": {"task": "proj.cleanup", "schedule": 30.0},
        f"{ENTRY_PREFIX}probe/gone": {"task": TASK_NAME, "schedule": 60.0},
    }
    return a


def test_discovery_carries_the_yaml_schedules(
    start_service: StartService, client_of: ClientOf
) -> None:
    entries = {e.url: e for e in client_of(start_service(YAML)).discovery()}
    assert entries["probe/nightly"].crontab == {
        "minute": "30",
        "hour": "2",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "1-5",
    }
    office = entries["probe/office-hours"].crontab
    assert office is not None and set(office) == set(CRONTAB_KEYS)
    assert (office["minute"], office["hour"]) == ("*/15", "8-18")
    assert entries["probe/plain"].crontab is None
    assert entries["probe/off"].enable is False
    assert entries["probe/nightly"].empty_param == ["--nightly", "a b"]
    assert entries["probe/plain"].empty_param == []


def test_beat_schedule_matches_the_yaml(start_service: StartService, client_of: ClientOf) -> None:
    a = app()
    ours = register_periodic_tasks(a, client_of(start_service(YAML)))
    beat = a.conf.beat_schedule
    names = {f"{ENTRY_PREFIX}probe/{n}" for n in ("nightly", "office-hours", "plain")}
    # Disabled tasks and the built-in counter (disabled) get no entry; a stale entry of ours is
    # gone; somebody else's entry is untouched.
    assert set(ours) == names
    assert set(beat) == names | {"mine"}
    assert beat["mine"] == {"task": "proj.cleanup", "schedule": 30.0}

    nightly = beat[f"{ENTRY_PREFIX}probe/nightly"]
    assert nightly["task"] == TASK_NAME
    assert nightly["schedule"] == crontab(minute="30", hour="2", day_of_week="1-5")
    assert nightly["args"] == ("probe/nightly", ["--nightly", "a b"])
    assert nightly["kwargs"]["scheduled"] is True
    office = beat[f"{ENTRY_PREFIX}probe/office-hours"]
    assert office["schedule"] == crontab(minute="*/15", hour="8-18")
    plain = beat[f"{ENTRY_PREFIX}probe/plain"]
    assert plain["schedule"] == crontab(minute=0, hour=1)
    assert plain["args"] == ("probe/plain", [])


def test_default_schedule_is_chosen_or_skipped(
    start_service: StartService, client_of: ClientOf
) -> None:
    client = client_of(start_service(YAML))
    a = app()
    ours = register_periodic_tasks(a, client, default_schedule=crontab(minute="5"))
    assert ours[f"{ENTRY_PREFIX}probe/plain"]["schedule"] == crontab(minute="5")
    ours = register_periodic_tasks(a, client, default_schedule=schedule(600))
    assert ours[f"{ENTRY_PREFIX}probe/plain"]["kwargs"]["crontab"] is None
    ours = register_periodic_tasks(a, client, default_schedule=None)
    assert f"{ENTRY_PREFIX}probe/plain" not in ours
    assert f"{ENTRY_PREFIX}probe/plain" not in a.conf.beat_schedule


def test_an_edited_yaml_shows_up_after_reregistration(
    start_service: StartService, client_of: ClientOf
) -> None:
    service = start_service(YAML)
    client = client_of(service)
    a = app()
    register_periodic_tasks(a, client)
    pid = service.proc.pid

    service.write_yaml(
        task("nightly", 'schedule: {minute: "45", hour: "3"}\nempty_param: ["--v2"]')
        + task("plain", 'schedule: "0 6 * * *"')
        + task("off", 'schedule: "* * * * *"')
        + task("fresh", 'schedule: "*/5 * * * *"')
    )
    poll(
        "the service to reload the edited YAML",
        lambda: any(e.url == "probe/fresh" for e in client.discovery()),
        timeout=10,
    )
    ours = register_periodic_tasks(a, client)
    assert service.proc.poll() is None and service.proc.pid == pid

    beat = a.conf.beat_schedule
    names = {f"{ENTRY_PREFIX}probe/{n}" for n in ("nightly", "plain", "off", "fresh")}
    assert set(ours) == names
    assert set(beat) == names | {"mine"}
    assert beat[f"{ENTRY_PREFIX}probe/nightly"]["schedule"] == crontab(minute="45", hour="3")
    assert beat[f"{ENTRY_PREFIX}probe/nightly"]["args"] == ("probe/nightly", ["--v2"])
    assert beat[f"{ENTRY_PREFIX}probe/plain"]["schedule"] == crontab(minute="0", hour="6")
    assert beat[f"{ENTRY_PREFIX}probe/off"]["schedule"] == crontab()
    assert beat[f"{ENTRY_PREFIX}probe/fresh"]["schedule"] == crontab(minute="*/5")


def test_a_failed_registration_changes_nothing(
    start_service: StartService, client_of: ClientOf
) -> None:
    a = app()
    register_periodic_tasks(a, client_of(start_service(YAML)))
    before = dict(a.conf.beat_schedule)
    with Client(f"http://127.0.0.1:{free_port()}") as down, pytest.raises(TransportError):
        register_periodic_tasks(a, down)
    assert a.conf.beat_schedule == before
    with (
        Client(f"{client_of(start_service(YAML)).base_url}/elsewhere") as wrong,
        pytest.raises(NotFound),
    ):
        register_periodic_tasks(a, wrong)
    assert a.conf.beat_schedule == before


DAILY_1AM = {"minute": "0", "hour": "1", "day_of_week": "*", "day_of_month": "*"}
DAILY_1AM["month_of_year"] = "*"


@pytest.mark.parametrize(
    ("fields", "published", "tz", "tick"),
    [
        # Published a few seconds after the tick: the tick.
        (DAILY_1AM, "2026-12-01T01:00:02+00:00", "UTC", "2026-12-01T01:00Z"),
        # Published late (beat catching up): still the tick it stands for.
        (DAILY_1AM, "2026-12-01T05:17:40+00:00", "UTC", "2026-12-01T01:00Z"),
        (DAILY_1AM, "2026-12-01T00:59:59+00:00", "UTC", "2026-11-30T01:00Z"),
        # In the app's time zone: Monday 02:30 in Shanghai is Sunday 18:30 UTC.
        (
            {**DAILY_1AM, "minute": "30", "hour": "2", "day_of_week": "mon"},
            "2026-12-01T09:00:30+08:00",
            "Asia/Shanghai",
            "2026-11-29T18:30Z",
        ),
        # No crontab (another kind of schedule): the minute it was published.
        (None, "2026-12-01T05:17:40+00:00", "UTC", "2026-12-01T05:17Z"),
    ],
)
def test_idempotency_key_names_the_tick(
    fields: dict[str, str] | None, published: str, tz: str, tick: str
) -> None:
    at = datetime.fromisoformat(published)
    key = idempotency_key("probe/nightly", scheduled_tick(fields, at, ZoneInfo(tz)))
    assert key == f"probe/nightly@{tick}"


def test_idempotency_key_is_utc() -> None:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert idempotency_key("/a/b", at) == "a/b@2026-12-01T01:00Z"
    assert idempotency_key("a/b", at.astimezone(timezone.utc)) == "a/b@2026-12-01T01:00Z"
