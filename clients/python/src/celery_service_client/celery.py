"""Schedule celery-service's tasks with Celery beat, and follow each run to its end from a worker.

In the style of Celery's own ``contrib`` modules: plain functions over an ``app``, nothing done at
import time, every setting read from ``app.conf``:

``celery_service_url``
    where the service listens (required), e.g. ``http://celery-service:8080``.
``celery_service_token``
    sent as ``Authorization: Bearer <token>`` when set.
``celery_service_http_timeout``
    seconds for one HTTP call (30).
``celery_service_poll_interval``
    seconds between two polls of a running session (5).
``celery_service_timeout``
    seconds after which the poller gives up on a run and kills it on the service (3600).
``celery_service_default_schedule``
    the schedule of an enabled task that has none (``crontab(minute=0, hour=1)``, the old Django
    consumer's default); ``None`` leaves such tasks unscheduled. Used by
    :class:`DiscoveryScheduler`; :func:`register_periodic_tasks` takes it as an argument.
``celery_service_refresh_interval``
    seconds between two reads of ``/discovery`` by :class:`DiscoveryScheduler` (60).

:func:`install` registers the task :data:`TASK_NAME` on the app; :func:`register_periodic_tasks`
turns ``GET /discovery`` into ``app.conf.beat_schedule`` entries named ``celery-service:<url>``;
:class:`DiscoveryScheduler` is a beat scheduler that does that at start and again every
``celery_service_refresh_interval``, so a running beat follows edits of the service's YAML.

The task submits ``POST /async/<url>`` and then polls the session through ``self.retry``: each
poll is a message with a countdown, so no worker thread sleeps however long the run takes. When it
gives up it kills the session, and either way it returns the final session as a JSON dict (see
:meth:`~celery_service_client.Session.to_json`).

Every submission carries an ``Idempotency-Key``. For a run scheduled by beat it is
``<url>@<tick>``, where ``<tick>`` is the scheduled minute in UTC (``2026-12-01T01:00Z``): beat's
message says neither the entry nor the time, so :func:`install` stamps the publish time on each of
this task's messages (header ``celery_service_published_at``, in the publishing process, beat's
own), and the worker takes the last minute at or before it that the entry's crontab matches, in
``app.timezone`` (for a catch-up run sent late, that is still the tick it stands for). Without the
header (a producer that did not call :func:`install`) it uses the message's ETA, else the time the
worker starts it. Any other run's key is ``<url>@celery-task:<task id>``, so only a redelivery of
the same message repeats it; pass ``idempotency_key=`` to choose your own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from celery import Celery, Task
from celery.beat import PersistentScheduler
from celery.exceptions import ImproperlyConfigured
from celery.schedules import BaseSchedule, crontab
from celery.signals import before_task_publish

from ._client import Client
from ._errors import (
    CeleryServiceError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
)
from ._models import CRONTAB_KEYS, Json, Session, parse_time

if TYPE_CHECKING:
    RunTask = Task[..., dict[str, Json]]

__all__ = [
    "DEFAULT_SCHEDULE",
    "ENTRY_PREFIX",
    "PUBLISHED_AT_HEADER",
    "TASK_NAME",
    "DiscoveryScheduler",
    "client_from_conf",
    "crontab_fields",
    "idempotency_key",
    "install",
    "register_periodic_tasks",
    "scheduled_tick",
]

#: The name of the task that runs a service task and follows its session.
TASK_NAME: Final = "celery_service.run"
#: The prefix of the beat entries :func:`register_periodic_tasks` owns.
ENTRY_PREFIX: Final = "celery-service:"
#: The message header :func:`install` stamps with the publish time (RFC 3339, UTC).
PUBLISHED_AT_HEADER: Final = "celery_service_published_at"

logger = logging.getLogger(__name__)


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT_SCHEDULE"


#: ``crontab(minute=0, hour=1)``, built when used rather than at import.
DEFAULT_SCHEDULE: Final = _Default()

ScheduleArg: TypeAlias = BaseSchedule | _Default | None


def client_from_conf(app: Celery) -> Client:
    """A :class:`Client` made from ``celery_service_url``/``_token``/``_http_timeout``."""
    conf = app.conf
    url = conf.get("celery_service_url")
    if not url:
        raise ImproperlyConfigured(
            "celery_service_url is not set: where does celery-service listen?"
        )
    return Client(
        str(url),
        token=conf.get("celery_service_token"),
        timeout=float(conf.get("celery_service_http_timeout", 30.0)),
    )


def install(app: Celery) -> RunTask:
    """Registers :data:`TASK_NAME` on ``app`` (workers need it) and returns it.

    Also connects the ``before_task_publish`` handler that stamps the publish time on its
    messages (beat needs it for the idempotency key). Calling it again does nothing more.
    """
    before_task_publish.connect(
        _stamp_published_at, weak=False, dispatch_uid="celery_service_client.stamp"
    )
    task: RunTask = app.task(
        name=TASK_NAME,
        bind=True,
        shared=False,
        # The deadline bounds the polling, not a count of polls.
        max_retries=None,
        ignore_result=False,
    )(_run)
    return task


def _stamp_published_at(sender: object = None, headers: Any = None, **_: object) -> None:
    if sender == TASK_NAME and isinstance(headers, dict):
        headers.setdefault(PUBLISHED_AT_HEADER, datetime.now(timezone.utc).isoformat())


def register_periodic_tasks(
    app: Celery,
    client: Client | None = None,
    default_schedule: ScheduleArg = DEFAULT_SCHEDULE,
) -> dict[str, dict[str, Any]]:
    """Fills ``app.conf.beat_schedule`` from ``GET /discovery``; returns the entries it made.

    Every enabled task gets the entry ``celery-service:<url>`` running :data:`TASK_NAME` with
    args ``(url, empty_param)``, on ``crontab(**entry.crontab)``, or on ``default_schedule`` for a
    task without a schedule (``None``: not scheduled). Disabled tasks get no entry. Entries of
    an earlier call are replaced; every other beat entry is left as it is. ``client`` defaults to
    :func:`client_from_conf`. Raises :class:`~celery_service_client.CeleryServiceError` (and
    changes nothing) when the service cannot be asked.
    """
    install(app)
    if client is None:
        with client_from_conf(app) as own:
            entries = own.discovery()
    else:
        entries = client.discovery()
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
    current = app.conf.beat_schedule or {}
    others = {k: v for k, v in current.items() if not k.startswith(ENTRY_PREFIX)}
    app.conf.beat_schedule = {**others, **ours}
    return ours


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


def _published_at(task: RunTask) -> datetime:
    request = task.request
    headers = request.headers if isinstance(request.headers, dict) else {}
    stamp = headers.get(PUBLISHED_AT_HEADER) or getattr(request, PUBLISHED_AT_HEADER, None)
    for value in (stamp, request.eta):
        if isinstance(value, str):
            try:
                return parse_time(value)
            except CeleryServiceError:
                continue
    return datetime.now(timezone.utc)


def _run(
    self: RunTask,
    url: str,
    body: Json = None,
    *,
    scheduled: bool = False,
    crontab: Mapping[str, str] | None = None,
    timeout: float | None = None,
    idempotency_key: str | None = None,
    session_id: str | None = None,
    deadline: float | None = None,
) -> dict[str, Json]:
    """Runs the service task at ``url`` with ``body`` and returns its final session.

    ``timeout`` overrides ``celery_service_timeout`` for this run. ``session_id`` and
    ``deadline`` are the task's own state between two polls; do not pass them.
    """
    app = self.app
    conf = app.conf
    poll = float(conf.get("celery_service_poll_interval", 5.0))
    if deadline is None:
        limit = float(timeout if timeout is not None else conf.get("celery_service_timeout", 3600))
        deadline = time.time() + limit
    if idempotency_key is None:
        idempotency_key = _key_for(self, url, scheduled, crontab)
    state: dict[str, Any] = {
        "scheduled": scheduled,
        "crontab": crontab,
        "timeout": timeout,
        "idempotency_key": idempotency_key,
        "deadline": deadline,
    }

    def again(countdown: float, exc: Exception | None = None, **changes: Any) -> Exception:
        countdown = max(0.0, min(countdown, deadline - time.time()))
        return self.retry(
            args=(url, body), kwargs={**state, **changes}, countdown=countdown, exc=exc
        )

    # Eager (task_always_eager, as in a project's own tests) or a plain call: there is no worker
    # to send a retry to, so wait here instead.
    blocking = bool(self.request.is_eager or self.request.called_directly)
    with client_from_conf(app) as client:
        if session_id is None:
            try:
                session_id = client.run_async(url, body, idempotency_key=idempotency_key)
            except (TransportError, TooManyRequests, ServiceUnavailable) as e:
                # The same key makes a second submission safe once the service honours it.
                if blocking or time.time() >= deadline:
                    raise
                raise again(e.retry_after or poll, e) from e
            logger.info(
                "celery-service: %s started session %s (Idempotency-Key %s)",
                url,
                session_id,
                idempotency_key,
            )
        while True:
            try:
                # NotFound goes up: sessions live in the service's memory, so it was restarted
                # and the run is lost.
                session: Session | None = client.query(session_id)
            except TransportError as e:
                if time.time() >= deadline:
                    raise
                if not blocking:
                    raise again(poll, e, session_id=session_id) from e
                session = None
            if session is not None and session.done:
                break
            if time.time() >= deadline:
                logger.warning(
                    "celery-service: %s session %s still running after %s s: killing it",
                    url,
                    session_id,
                    timeout if timeout is not None else conf.get("celery_service_timeout", 3600),
                )
                session = client.kill(session_id)
                break
            if not blocking:
                raise again(poll, session_id=session_id)
            time.sleep(max(0.0, min(poll, deadline - time.time())))
    _log_end(url, session)
    return session.to_json()


def _key_for(task: RunTask, url: str, scheduled: bool, fields: Mapping[str, str] | None) -> str:
    if scheduled:
        return idempotency_key(url, scheduled_tick(fields, _published_at(task), task.app.timezone))
    # A plain call has no task id; any run of its own is then a new run.
    return f"{url.strip('/')}@celery-task:{task.request.id or uuid.uuid4()}"


def _log_end(url: str, session: Session) -> None:
    if session.ok:
        logger.info("celery-service: %s session %s done: %s", url, session.id, session.message)
    else:
        logger.warning("celery-service: %s session %s failed: %s", url, session.id, session.error)


class DiscoveryScheduler(PersistentScheduler):
    """A beat scheduler that keeps the ``celery-service:`` entries in step with ``/discovery``.

    It calls :func:`register_periodic_tasks` (with ``celery_service_default_schedule``) when beat
    starts and every ``celery_service_refresh_interval`` seconds, and merges what changed into the
    running schedule: an edit of the service's YAML reaches beat without restarting either. When
    the service cannot be asked it keeps the schedule it has, logs a warning and asks again
    within 15 s. Use it with ``beat_scheduler = "celery_service_client.celery:DiscoveryScheduler"``
    (or ``celery beat -S …``); everything else is :class:`celery.beat.PersistentScheduler`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._next_refresh = 0.0
        self._ours: dict[str, dict[str, Any]] | None = None
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        self._refresh()
        super().setup_schedule()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if time.monotonic() >= self._next_refresh and self._refresh():
            self.merge_inplace(self.app.conf.beat_schedule)
            self.install_default_entries(self.schedule)
            # Rebuild the heap: an entry changed in place keeps its old place in it otherwise.
            self._heap = None
            self.sync()
        delay = float(super().tick(*args, **kwargs))
        return max(0.0, min(delay, self._next_refresh - time.monotonic()))

    def _refresh(self) -> bool:
        """Re-registers; whether the entries changed."""
        conf = self.app.conf
        interval = float(conf.get("celery_service_refresh_interval", 60.0))
        try:
            ours = register_periodic_tasks(
                self.app,
                default_schedule=conf.get("celery_service_default_schedule", DEFAULT_SCHEDULE),
            )
        except CeleryServiceError as e:
            logger.warning("celery-service: cannot read /discovery, schedule kept: %s", e)
            self._next_refresh = time.monotonic() + min(interval, 15.0)
            return False
        self._next_refresh = time.monotonic() + interval
        if self._ours is not None and _same(self._ours, ours):
            return False
        before = set(self._ours or {})
        logger.info(
            "celery-service: schedule from /discovery: %d entries (added %s, removed %s)",
            len(ours),
            sorted(set(ours) - before) or "none",
            sorted(before - set(ours)) or "none",
        )
        self._ours = ours
        return True


def _same(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]) -> bool:
    return a.keys() == b.keys() and all(
        a[k]["schedule"] == b[k]["schedule"]
        and a[k]["args"] == b[k]["args"]
        and a[k]["kwargs"] == b[k]["kwargs"]
        for k in a
    )
