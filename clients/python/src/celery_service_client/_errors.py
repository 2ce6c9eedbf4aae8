"""Everything the client raises: one base class, one subclass per way a call can be refused."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

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
    """HTTP 401: the service wants a token (``Client(token=…)``) and got none or a wrong one."""


class NotFound(CeleryServiceError):
    """HTTP 404: no task at that url, or no such session (finished sessions expire)."""


class Conflict(CeleryServiceError):
    """HTTP 409: the call conflicts with one the service already has (same idempotency key…)."""


class PayloadTooLarge(CeleryServiceError):
    """HTTP 413: the body is over the service's limit (1 MiB)."""


class TooManyRequests(CeleryServiceError):
    """HTTP 429: the service is at its limit; ``retry_after`` is how long it asks to wait."""


class ServiceUnavailable(CeleryServiceError):
    """HTTP 503: the service cannot take the call now; may carry ``retry_after``."""


class TransportError(CeleryServiceError):
    """No usable answer: the connection failed or timed out, or the answer is not the API's."""


class WaitTimeout(CeleryServiceError, TimeoutError):
    """:meth:`Client.wait` gave up; ``session`` is the last state seen (still running)."""

    def __init__(self, msg: str, *, session: Session) -> None:
        super().__init__(msg)
        self.session = session


_BY_STATUS: dict[int, type[CeleryServiceError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
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
