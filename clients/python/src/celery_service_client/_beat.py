"""The service's tasks as Celery beat entries: built from ``/discovery`` once
(:func:`register_periodic_tasks`) or kept in step with it by a beat scheduler
(:class:`DiscoveryScheduler`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from celery import Celery
from celery.beat import PersistentScheduler
from celery.schedules import BaseSchedule, crontab

from ._client import Client
from ._errors import CeleryServiceError
from ._models import DiscoveryEntry
from ._ticks import crontab_fields

__all__ = [
    "DEFAULT_SCHEDULE",
    "ENTRY_PREFIX",
    "DiscoveryScheduler",
    "beat_entries",
    "register_periodic_tasks",
]

#: The name of the task that runs a service task and follows its session.
TASK_NAME: Final = "celery_service.run"
#: The prefix of the beat entries this package owns.
ENTRY_PREFIX: Final = "celery-service:"
#: The ``(connect, read)`` timeout of :class:`DiscoveryScheduler`'s reads of ``/discovery``.
REFRESH_TIMEOUT: Final = (3.0, 10.0)

logger = logging.getLogger("celery_service_client.celery")


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT_SCHEDULE"


#: ``crontab(minute=0, hour=1)``, built when used rather than at import.
DEFAULT_SCHEDULE: Final = _Default()

ScheduleArg: TypeAlias = BaseSchedule | _Default | None


def beat_entries(
    entries: Sequence[DiscoveryEntry], default_schedule: ScheduleArg = DEFAULT_SCHEDULE
) -> dict[str, dict[str, Any]]:
    """The beat entries of the enabled tasks among ``entries``, by entry name.

    Each is ``celery-service:<url>`` running :data:`TASK_NAME` with args ``(url, empty_param)``
    on ``crontab(**entry.crontab)``, or on ``default_schedule`` for a task without a schedule
    (``None``: no entry).
    """
    default = (
        crontab(minute=0, hour=1) if isinstance(default_schedule, _Default) else default_schedule
    )
    ours: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not entry.enable:
            continue
        if entry.crontab is not None:
            fields: dict[str, str] | None = dict(entry.crontab)
            schedule: BaseSchedule = crontab(**entry.crontab)
        elif default is not None:
            fields = crontab_fields(default)
            schedule = default
        else:
            continue
        ours[ENTRY_PREFIX + entry.url] = {
            "task": TASK_NAME,
            "schedule": schedule,
            "args": (entry.url, entry.empty_param),
            # `scheduled` and `crontab` tell the task it runs a tick (for its idempotency key).
            "kwargs": {"scheduled": True, "crontab": fields},
            "options": {},
        }
    return ours


def _replace_ours(app: Celery, ours: Mapping[str, dict[str, Any]]) -> None:
    current = app.conf.beat_schedule or {}
    others = {k: v for k, v in current.items() if not k.startswith(ENTRY_PREFIX)}
    app.conf.beat_schedule = {**others, **ours}


def register_periodic_tasks(
    app: Celery,
    client: Client | None = None,
    default_schedule: ScheduleArg = DEFAULT_SCHEDULE,
) -> dict[str, dict[str, Any]]:
    """Fills ``app.conf.beat_schedule`` from ``GET /discovery``; returns the entries it made.

    The entries are :func:`beat_entries`'. Entries of an earlier call are replaced; every other
    beat entry is left as it is. ``client`` defaults to one made from ``app.conf``. Raises
    :class:`~celery_service_client.CeleryServiceError` (and changes nothing) when the service
    cannot be asked.

    This fills ``beat_schedule``, which beat's file scheduler (``PersistentScheduler``) follows.
    A database scheduler (django-celery-beat's ``DatabaseScheduler``) copies ``beat_schedule``
    into its tables once and never removes what it copied: use
    :mod:`celery_service_client.contrib.django`'s ``celery_service_sync`` there instead.
    """
    from .celery import client_from_conf, install

    install(app)
    if client is None:
        with client_from_conf(app) as own:
            entries = own.discovery()
    else:
        entries = client.discovery()
    ours = beat_entries(entries, default_schedule)
    _replace_ours(app, ours)
    return ours


class DiscoveryScheduler(PersistentScheduler):
    """A beat scheduler that keeps the ``celery-service:`` entries in step with ``/discovery``.

    It is :class:`celery.beat.PersistentScheduler` (the schedule in beat's local file) plus a
    thread that reads ``/discovery`` when beat starts and every
    ``celery_service_refresh_interval`` seconds, with short timeouts (:data:`REFRESH_TIMEOUT`),
    so that a service that does not answer never holds up beat's loop and the project's other
    entries. Beat's loop merges what changed into the running schedule: an edit of the
    service's YAML reaches beat without restarting either. When the service cannot be asked it
    keeps the last good schedule, logs a warning and asks again within 15 s.

    Use it with ``beat_scheduler = "celery_service_client.celery:DiscoveryScheduler"`` (or
    ``celery beat -S …``). It **replaces** whatever scheduler the project had: a project on
    django-celery-beat's ``DatabaseScheduler`` keeps that scheduler and runs the
    ``celery_service_sync`` command of :mod:`celery_service_client.contrib.django` instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending: dict[str, dict[str, Any]] | None = None
        self._ours: dict[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        super().setup_schedule()
        from .celery import install

        install(self.app)
        self._thread = threading.Thread(
            target=self._refresh_loop, name="celery-service-discovery", daemon=True
        )
        self._thread.start()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            _replace_ours(self.app, pending)
            self.merge_inplace(self.app.conf.beat_schedule)
            self.install_default_entries(self.schedule)
            # Rebuild the heap: an entry changed in place keeps its old place in it otherwise.
            self._heap = None
            self.sync()
        delay = float(super().tick(*args, **kwargs))
        # Come back soon while a refresh may be waiting to be merged.
        return min(delay, 1.0)

    def close(self) -> None:
        self._stop.set()
        super().close()

    def _refresh_loop(self) -> None:
        conf = self.app.conf
        interval = float(conf.get("celery_service_refresh_interval", 60.0))
        default = conf.get("celery_service_default_schedule", DEFAULT_SCHEDULE)
        from .celery import client_from_conf

        try:
            client = client_from_conf(self.app, timeout=REFRESH_TIMEOUT)
        except Exception:
            logger.exception("celery-service: no /discovery refresh: the settings are wrong")
            return
        with client:
            while not self._stop.is_set():
                wait = self._refresh_once(client, default, interval)
                self._stop.wait(wait)

    def _refresh_once(self, client: Client, default: ScheduleArg, interval: float) -> float:
        """Reads ``/discovery`` once; the seconds to wait before the next read."""
        started = time.monotonic()
        try:
            ours = beat_entries(client.discovery(), default)
        except CeleryServiceError as e:
            logger.warning("celery-service: cannot read /discovery, schedule kept: %s", e)
            return min(interval, 15.0)
        except Exception:
            logger.exception("celery-service: reading /discovery failed, schedule kept")
            return min(interval, 15.0)
        if self._ours is None or not _same(self._ours, ours):
            before = set(self._ours or {})
            logger.info(
                "celery-service: schedule from /discovery: %d entries (added %s, removed %s)",
                len(ours),
                sorted(set(ours) - before) or "none",
                sorted(before - set(ours)) or "none",
            )
            self._ours = ours
            with self._lock:
                self._pending = ours
        return max(0.0, interval - (time.monotonic() - started))


def _same(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]) -> bool:
    return a.keys() == b.keys() and all(
        a[k]["schedule"] == b[k]["schedule"]
        and a[k]["args"] == b[k]["args"]
        and a[k]["kwargs"] == b[k]["kwargs"]
        for k in a
    )
