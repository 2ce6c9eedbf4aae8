"""``/discovery`` into django-celery-beat rows: what ``manage.py celery_service_sync`` does.

One ``PeriodicTask`` (with its ``CrontabSchedule``) per discovered task that has a schedule,
named ``celery-service:<url>``, running ``celery_service.run`` with args ``[url, empty_param]``,
``enabled`` as ``/discovery``'s ``enable``. A task without a crontab gets
``DEFAULT_SCHEDULE`` when one is set, else no row. Rows with that name prefix whose task is
gone (or no longer scheduled) are deleted unless ``prune`` is off; rows without the prefix are
never touched; the rows of the urls in ``FROZEN`` are left as an admin left them (never
created, changed or deleted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from ..._beat import ENTRY_PREFIX, TASK_NAME
from ..._client import Client
from ..._models import CRONTAB_KEYS, DiscoveryEntry, Json
from .conf import ServiceSettings, load_settings

__all__ = ["Row", "SyncReport", "celery_service_sync", "plan_rows"]


@dataclass(frozen=True)
class Row:
    """What one ``PeriodicTask`` of a task should hold."""

    name: str
    url: str
    crontab: dict[str, str]
    timezone: str
    enabled: bool
    args: str
    kwargs: str
    description: str


@dataclass
class SyncReport:
    """What a sync changed (or, dry, would change): row names in each list."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    dry_run: bool = False

    def lines(self) -> list[str]:
        """One line per row, for the command's output."""
        verb = "would " if self.dry_run else ""
        out = [f"{verb}create {n}" for n in self.created]
        out += [f"{verb}update {n}" for n in self.updated]
        out += [f"{verb}delete {n}" for n in self.deleted]
        out += [f"keep {n} (its task is gone; --no-prune)" for n in self.kept]
        out += [f"leave {n} (frozen)" for n in self.frozen]
        out.append(
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.deleted)} deleted, "
            f"{len(self.kept)} kept, {len(self.frozen)} frozen"
            + (" (dry run: nothing written)" if self.dry_run else "")
        )
        return out


def _timezone() -> str:
    return str(getattr(settings, "CELERY_TIMEZONE", None) or settings.TIME_ZONE or "UTC")


def plan_rows(
    entries: Sequence[DiscoveryEntry], conf: ServiceSettings, timezone: str
) -> tuple[dict[str, Row], set[str]]:
    """The rows the tasks of ``entries`` should have, by name, and the names of frozen rows."""
    rows: dict[str, Row] = {}
    for entry in entries:
        if entry.url.strip("/") in conf.frozen:
            continue
        fields = dict(entry.crontab) if entry.crontab is not None else conf.default_schedule
        if fields is None:
            continue
        name = ENTRY_PREFIX + entry.url
        body: Json = entry.empty_param
        rows[name] = Row(
            name=name,
            url=entry.url,
            crontab=fields,
            timezone=timezone,
            enabled=entry.enable,
            args=json.dumps([entry.url, body]),
            kwargs=json.dumps({"scheduled": True, "crontab": fields}, sort_keys=True),
            description=entry.description,
        )
    return rows, {ENTRY_PREFIX + url for url in conf.frozen}


def _same(task: Any, row: Row) -> bool:
    cron = task.crontab
    return bool(
        task.task == TASK_NAME
        and cron is not None
        and all(getattr(cron, k) == row.crontab[k] for k in CRONTAB_KEYS)
        and str(cron.timezone) == row.timezone
        and task.enabled == row.enabled
        and json.loads(task.args or "null") == json.loads(row.args)
        and json.loads(task.kwargs or "null") == json.loads(row.kwargs)
        and task.description == row.description
        and task.interval_id is None
        and task.solar_id is None
        and task.clocked_id is None
    )


def _write(task: Any, row: Row) -> None:
    task.task = TASK_NAME
    task.crontab, _ = CrontabSchedule.objects.get_or_create(timezone=row.timezone, **row.crontab)
    task.interval = task.solar = task.clocked = None
    task.enabled = row.enabled
    task.args = row.args
    task.kwargs = row.kwargs
    task.description = row.description
    # save() (not a bulk update) so that django-celery-beat's signal tells beat to reload.
    task.save()


def celery_service_sync(
    *,
    dry_run: bool = False,
    prune: bool = True,
    client: Client | None = None,
) -> SyncReport:
    """Brings the ``celery-service:`` rows in step with ``GET /discovery``; what it did.

    ``dry_run`` writes nothing and reports what it would do; ``prune=False`` keeps the rows of
    tasks that are gone. ``client`` defaults to one made from ``CELERY_SERVICE``. Raises
    :class:`~celery_service_client.CeleryServiceError` (having changed nothing) when the
    service cannot be asked.
    """
    conf = load_settings()
    if client is None:
        with Client(conf.url, token=conf.token, timeout=conf.timeout) as own:
            entries = own.discovery()
    else:
        entries = client.discovery()
    rows, frozen = plan_rows(entries, conf, _timezone())
    report = SyncReport(dry_run=dry_run)
    with transaction.atomic():
        existing = {
            t.name: t
            for t in PeriodicTask.objects.select_related("crontab").filter(
                name__startswith=ENTRY_PREFIX
            )
        }
        for name, row in sorted(rows.items()):
            task = existing.get(name)
            if task is not None and _same(task, row):
                report.unchanged.append(name)
                continue
            (report.created if task is None else report.updated).append(name)
            if not dry_run:
                _write(task if task is not None else PeriodicTask(name=name), row)
        for name, task in sorted(existing.items()):
            if name in rows:
                continue
            if name in frozen:
                report.frozen.append(name)
            elif not prune:
                report.kept.append(name)
            else:
                report.deleted.append(name)
                if not dry_run:
                    task.delete()
    return report
