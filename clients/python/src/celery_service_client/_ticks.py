"""The tick a scheduled run stands for, and the idempotency key made from it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo

from celery.schedules import BaseSchedule, crontab

from ._models import CRONTAB_KEYS

__all__ = ["crontab_fields", "idempotency_key", "scheduled_tick"]


def crontab_fields(schedule: BaseSchedule) -> dict[str, str] | None:
    """The five ``crontab`` keyword arguments of a crontab schedule, ``None`` for another kind."""
    if not isinstance(schedule, crontab):
        return None
    return {key: str(getattr(schedule, f"_orig_{key}")) for key in CRONTAB_KEYS}


def scheduled_tick(
    fields: Mapping[str, str] | None,
    at: datetime,
    tz: tzinfo = timezone.utc,
) -> datetime:
    """The tick a run published at ``at`` stands for, in UTC.

    That is the last minute at or before ``at`` that the crontab ``fields`` match in ``tz`` (as
    beat reads them: day of month AND day of week), searched back at most 400 days; ``at``
    floored to the minute when there are no fields or nothing matched.
    """
    local = at.astimezone(tz).replace(second=0, microsecond=0, tzinfo=None)
    if fields:
        try:
            cron = crontab(**fields)
        except ValueError:
            cron = None
        found = None if cron is None else _last_match(cron, local)
        if found is not None:
            local = found
    return local.replace(tzinfo=tz).astimezone(timezone.utc)


def _last_match(cron: crontab, start: datetime) -> datetime | None:
    minutes: set[int] = getattr(cron, "minute")  # noqa: B009 - the stubs do not declare them
    hours: set[int] = getattr(cron, "hour")  # noqa: B009
    dows: set[int] = getattr(cron, "day_of_week")  # noqa: B009 - 0 is Sunday
    doms: set[int] = getattr(cron, "day_of_month")  # noqa: B009
    months: set[int] = getattr(cron, "month_of_year")  # noqa: B009
    t = start
    stop = start - timedelta(days=400)
    while t >= stop:
        if t.month not in months or t.day not in doms or t.isoweekday() % 7 not in dows:
            t = t.replace(hour=0, minute=0) - timedelta(minutes=1)
        elif t.hour not in hours:
            t = t.replace(minute=0) - timedelta(minutes=1)
        elif t.minute not in minutes:
            t -= timedelta(minutes=1)
        else:
            return t
    return None


def idempotency_key(url: str, tick: datetime) -> str:
    """``<url>@<tick>``, the tick as a UTC minute: ``tendb-cluster/demo1@2026-12-01T01:00Z``."""
    return f"{url.strip('/')}@{tick.astimezone(timezone.utc):%Y-%m-%dT%H:%MZ}"
