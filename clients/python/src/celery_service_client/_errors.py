"""Everything the client raises: one base class, one subclass per way a call can be refused."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import Json, Session


class CeleryServiceError(Exception):
    """Base of every error this package raises.

    For an answer of the service, ``status`` is its HTTP status, ``code`` the envelope's ``code``
    (1 on every refusal) and ``msg`` its ``msg``; ``data`` is the envelope's ``data`` (the last
    stdout line of a failed sync run, ``None`` otherwise). ``status`` and ``code`` are ``None`` when
    there was no answer to read (:class:`TransportError`, :class:`WaitTimeout`). ``retry_after`` is
    the answer's ``Retry-After`` in seconds, when it has one (429 and 503 do).
    """

    def __init__(
        self,
        msg: str,
        *,
        status: int | None = None,
        code: int | None = None,
        data: Json = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status
        self.code = code
        self.data = data
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles exceptions (and its JSON serializer rebuilds them from ``args``): keep
        # every attribute, whatever the subclass's constructor takes.
        return (_rebuild, (type(self), dict(self.__dict__)))

    def __str__(self) -> str:
        if self.status is None:
            return self.msg
        return f"HTTP {self.status}, code {self.code}: {self.msg}"


class TaskFailed(CeleryServiceError):
    """A sync run ended badly: HTTP 200 with ``code`` 1.

    ``msg`` says why (the last stderr line, ``exited with code N``, ``killed by signal N``,
    ``cannot start …``) and ``data`` is the last stdout line.
    """


class BadRequest(CeleryServiceError):
    """HTTP 400: the body is not what the task takes, or a session id is not a UUID."""


class Unauthorized(CeleryServiceError):
    """HTTP 401: the service wants a token (``--auth-token``) and got none or a wrong one."""


class Forbidden(CeleryServiceError):
    """HTTP 403: the token is a read-only one (``--read-token``) and the route runs or changes
    something (a task call, ``/async/kill``, ``/-/reload``)."""


class NotFound(CeleryServiceError):
    """HTTP 404: no task at that url, or no such session (finished sessions expire)."""


class Conflict(CeleryServiceError):
    """HTTP 409: the task has ``concurrency_policy: forbid`` and a run of it is active (``msg``
    names that run's session); no run was started. The Celery poller counts it as a skipped
    tick."""


class UnprocessableEntity(CeleryServiceError):
    """HTTP 422: the ``Idempotency-Key`` was already used for another task within the service's
    ``--idempotency-window``, or ``/-/reload`` rejected the config file (``msg`` lists every
    error; the previous config keeps serving)."""


class PayloadTooLarge(CeleryServiceError):
    """HTTP 413: the body is over the service's limit (1 MiB)."""


class TooManyRequests(CeleryServiceError):
    """HTTP 429: ``--max-running`` runs are active; ``retry_after`` is how long it asks to
    wait."""


class ServiceUnavailable(CeleryServiceError):
    """HTTP 503: the service cannot take the call now: it is shutting down and starts no new
    runs (with ``retry_after``; another replica, or this one restarted, will), its result store
    cannot be read, or it holds ``--max-sessions`` sessions. Worth retrying."""


class TransportError(CeleryServiceError):
    """No usable answer: the connection failed or timed out, or the answer is not the API's."""


class WaitTimeout(CeleryServiceError, TimeoutError):
    """:meth:`Client.wait` gave up; ``session`` is the last state seen (still running)."""

    def __init__(self, msg: str, *, session: Session | None = None) -> None:
        super().__init__(msg)
        self.session = session


def _rebuild(cls: type[CeleryServiceError], state: dict[str, Any]) -> CeleryServiceError:
    """Unpickles an error: the instance with its attributes, its constructor not called."""
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("msg", ""))
    error.__dict__.update(state)
    return error


#: The statuses worth calling again for: the service or a proxy in front of it is briefly unable
#: to answer (a draining or restarting replica, 502/504 from a proxy), or at its run limit.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


def is_retryable(error: CeleryServiceError) -> bool:
    """Whether calling again later may succeed: no answer at all, or a retryable status."""
    return isinstance(error, TransportError) or error.status in RETRYABLE_STATUSES


_BY_STATUS: dict[int, type[CeleryServiceError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: UnprocessableEntity,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_for(
    status: int,
    code: int | None,
    msg: str,
    data: Json,
    headers: Mapping[str, str],
) -> CeleryServiceError:
    """The exception for a refused call: by HTTP status, and :class:`TaskFailed` for a 2xx."""
    if 200 <= status < 300:
        cls: type[CeleryServiceError] = TaskFailed
    else:
        cls = _BY_STATUS.get(status, CeleryServiceError)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    return cls(msg, status=status, code=code, data=data, retry_after=retry_after)
