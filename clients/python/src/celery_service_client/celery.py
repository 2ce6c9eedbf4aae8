"""Schedule celery-service's tasks with Celery beat, and follow each run to its end from a worker.

In the style of Celery's own ``contrib`` modules: plain functions over an ``app``, nothing done at
import time, every setting read from ``app.conf``:

``celery_service_url``
    where the service listens (required), e.g. ``http://celery-service:8080``.
``celery_service_token``
    sent as ``Authorization: Bearer <token>`` when set.
``celery_service_http_timeout``
    seconds for one HTTP call, or a ``(connect, read)`` pair (``(5, 30)``).
``celery_service_poll_interval``
    seconds between two polls of a running session (5), and the first wait after a fault.
``celery_service_max_backoff``
    the longest wait between two attempts after faults (60): waits double from the poll
    interval up to it, and are never shorter than the answer's ``Retry-After``.
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
:class:`DiscoveryScheduler` is a beat scheduler (beat's file scheduler plus a thread) that does
that at start and again every ``celery_service_refresh_interval``, so a running beat follows
edits of the service's YAML. It replaces the project's scheduler: a project on
django-celery-beat's ``DatabaseScheduler`` keeps that one and uses
:mod:`celery_service_client.contrib.django` (``manage.py celery_service_sync``) instead.

The task submits ``POST /async/<url>`` and then polls the session through ``self.retry``: each
poll is a message with a countdown, so no worker process sleeps however long the run takes (one
worker process follows any number of runs). Faults that may pass are retried with backoff until
the deadline, on submission and while polling alike: no answer (connection refused, timeout),
429 and 503 (after their ``Retry-After``), and a proxy's 502 and 504. A 409 (the task has
``concurrency_policy: forbid`` and a run of it is active) is a skipped tick: logged, and the
task succeeds with ``{"skipped": true, …}`` (see :func:`is_skipped`). When the poller gives up
(deadline passed) it kills the session. Its result is the final session as a JSON dict (see
:meth:`~celery_service_client.Session.to_json`). Each worker process keeps one :class:`Client`
(and its connections) for all its polls.

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
import os
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

from celery import Celery, Task
from celery.exceptions import ImproperlyConfigured
from celery.signals import before_task_publish

from ._beat import (
    DEFAULT_SCHEDULE,
    ENTRY_PREFIX,
    TASK_NAME,
    DiscoveryScheduler,
    beat_entries,
    register_periodic_tasks,
)
from ._client import DEFAULT_TIMEOUT, Client, HttpTimeout
from ._errors import CeleryServiceError, Conflict, is_retryable
from ._models import Json, Session, parse_time
from ._ticks import crontab_fields, idempotency_key, scheduled_tick

if TYPE_CHECKING:
    RunTask = Task[..., dict[str, Json]]

__all__ = [
    "DEFAULT_SCHEDULE",
    "ENTRY_PREFIX",
    "PUBLISHED_AT_HEADER",
    "TASK_NAME",
    "DiscoveryScheduler",
    "beat_entries",
    "client_from_conf",
    "crontab_fields",
    "idempotency_key",
    "install",
    "is_skipped",
    "register_periodic_tasks",
    "scheduled_tick",
    "shared_client",
]

#: The message header :func:`install` stamps with the publish time (RFC 3339, UTC).
PUBLISHED_AT_HEADER: Final = "celery_service_published_at"

logger = logging.getLogger(__name__)


def _conf_timeout(value: Any) -> HttpTimeout:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, (list, tuple)):
        connect, read = value
        return (
            None if connect is None else float(connect),
            None if read is None else float(read),
        )
    return float(value)


def client_from_conf(app: Celery, *, timeout: HttpTimeout | None = None) -> Client:
    """A new :class:`Client` made from ``celery_service_url``/``_token``/``_http_timeout``
    (``timeout``, when given, instead of the last)."""
    conf = app.conf
    url = conf.get("celery_service_url")
    if not url:
        raise ImproperlyConfigured(
            "celery_service_url is not set: where does celery-service listen?"
        )
    token = conf.get("celery_service_token")
    if token is not None and not str(token).strip():
        raise ImproperlyConfigured(
            "celery_service_token is empty: leave it unset (None) for a service without tokens"
        )
    return Client(
        str(url),
        token=None if token is None else str(token),
        timeout=timeout or _conf_timeout(conf.get("celery_service_http_timeout")),
    )


_shared_lock = threading.Lock()
_shared: dict[tuple[int, str], Client] = {}


def shared_client(app: Celery) -> Client:
    """This process's :class:`Client` for ``app``'s settings, made on first use and kept for
    every poll.

    A forked child (a prefork pool's worker process) makes its own rather than sharing its
    parent's connections.
    """
    conf = app.conf
    settings = (
        conf.get("celery_service_url"),
        conf.get("celery_service_token"),
        conf.get("celery_service_http_timeout"),
    )
    key = (os.getpid(), repr(settings))
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            for stale in [k for k in _shared if k[0] != key[0]]:
                # The parent's: not closed here, its sockets belong to the parent.
                del _shared[stale]
            client = _shared[key] = client_from_conf(app)
        return client


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


def is_skipped(result: Mapping[str, Json]) -> bool:
    """Whether a result of :data:`TASK_NAME` is a skipped tick (a 409) rather than a session."""
    return result.get("skipped") is True


def _stamp_published_at(sender: object = None, headers: Any = None, **_: object) -> None:
    if sender == TASK_NAME and isinstance(headers, dict):
        headers.setdefault(PUBLISHED_AT_HEADER, datetime.now(timezone.utc).isoformat())


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
    faults: int = 0,
) -> dict[str, Json]:
    """Runs the service task at ``url`` with ``body`` and returns its final session.

    ``timeout`` overrides ``celery_service_timeout`` for this run. ``session_id``, ``deadline``
    and ``faults`` are the task's own state between two polls; do not pass them.
    """
    conf = self.app.conf
    poll = float(conf.get("celery_service_poll_interval", 5.0))
    limit = float(timeout if timeout is not None else conf.get("celery_service_timeout", 3600))
    if deadline is None:
        deadline = time.time() + limit
    key = idempotency_key or _key_for(self, url, scheduled, crontab)
    # Eager (task_always_eager, as in a project's own tests) or a plain call: there is no worker
    # to send a retry to, so wait here instead.
    blocking = bool(self.request.is_eager or self.request.called_directly)
    client = shared_client(self.app)
    while True:
        try:
            if session_id is None:
                session_id = _submit(client, url, body, key)
                faults = 0
            session = client.query(session_id)
            faults = 0
            if session.done:
                _log_end(url, session)
                return session.to_json()
            wait, fault = poll, None
        except Conflict as e:
            if session_id is not None:
                raise
            logger.warning("celery-service: %s skipped: %s", url, e.msg)
            return {"skipped": True, "task": url, "reason": e.msg, "idempotency_key": key}
        except CeleryServiceError as e:
            # NotFound while polling goes up: sessions live in the service's memory, so it was
            # restarted and the run is lost.
            if not is_retryable(e):
                raise
            wait, fault = _backoff(conf, poll, faults, e.retry_after), e
            faults += 1
            logger.warning("celery-service: %s: %s; again in %.1f s", url, e, wait)
        left = deadline - time.time()
        if left <= 0:
            return _give_up(client, url, session_id, limit, fault)
        wait = min(wait, left)
        if blocking:
            time.sleep(wait)
            continue
        state = {
            "scheduled": scheduled,
            "crontab": crontab,
            "timeout": timeout,
            "idempotency_key": key,
            "session_id": session_id,
            "deadline": deadline,
            "faults": faults,
        }
        raise self.retry(args=(url, body), kwargs=state, countdown=wait, exc=fault)


def _submit(client: Client, url: str, body: Json, key: str) -> str:
    # The key makes a second submission safe: one that reached the service answers its session.
    session_id = client.run_async(url, body, idempotency_key=key)
    logger.info("celery-service: %s started session %s (Idempotency-Key %s)", url, session_id, key)
    return session_id


def _backoff(conf: Any, poll: float, faults: int, retry_after: float | None) -> float:
    ceiling = float(conf.get("celery_service_max_backoff", 60.0))
    return max(min(poll * 2.0**faults, ceiling), retry_after or 0.0)


def _give_up(
    client: Client,
    url: str,
    session_id: str | None,
    limit: float,
    fault: CeleryServiceError | None,
) -> dict[str, Json]:
    """The deadline passed: kills the run, or raises the last fault when there is none."""
    if session_id is None:
        assert fault is not None
        raise fault
    logger.warning(
        "celery-service: %s session %s still running after %s s: killing it", url, session_id, limit
    )
    session = client.kill(session_id)
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
