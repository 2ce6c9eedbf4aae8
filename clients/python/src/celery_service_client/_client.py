"""The HTTP client: one method per route of the service, each answer unwrapped from its envelope."""

from __future__ import annotations

import builtins
import enum
import json
import time
from types import TracebackType
from typing import Any, Final, TypeAlias

import requests

from ._errors import TransportError, WaitTimeout, error_for
from ._models import DiscoveryEntry, Json, Route, Session

__all__ = ["USE_CLIENT_DEFAULT", "Client", "UseClientDefault"]


class UseClientDefault(enum.Enum):
    """The type of :data:`USE_CLIENT_DEFAULT`."""

    USE_CLIENT_DEFAULT = enum.auto()


#: For a per-call ``timeout``: use the one the :class:`Client` was made with (``None`` means none).
USE_CLIENT_DEFAULT: Final = UseClientDefault.USE_CLIENT_DEFAULT

Timeout: TypeAlias = float | UseClientDefault | None

_NO_BODY: Final = object()


class Client:
    """A client of one celery-service.

    ``base_url`` is where it listens (``http://celery-service:8080``); ``token``, when given, is
    sent as ``Authorization: Bearer <token>``; ``timeout`` (seconds, ``None`` for none) bounds
    every call unless the call says otherwise, and a sync run usually should
    (``run_sync(…, timeout=None)``). Task ``url``\\ s are in the form ``/discovery`` gives
    (``tendb-cluster/demo1``).

    Every method returns what the envelope's ``data`` holds, typed, and raises a
    :class:`~celery_service_client.CeleryServiceError` subclass when the service refuses the call
    (``code`` != 0 or an HTTP error) or cannot be reached. Use it as a context manager, or call
    :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = session if session is not None else requests.Session()
        self._owns_http = session is None
        self._headers = {"Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections (only those of a ``requests.Session`` it made itself)."""
        if self._owns_http:
            self._http.close()

    # -- routes ---------------------------------------------------------------------------------

    def list(self) -> builtins.list[Route]:
        """``GET /list``: every route the service serves."""
        return [Route.from_json(r) for r in self._list_of(self._call("GET", "list"), "/list")]

    def discovery(self) -> builtins.list[DiscoveryEntry]:
        """``GET /discovery``: every task, enabled or not, with what a scheduler needs."""
        data = self._call("GET", "discovery")
        return [DiscoveryEntry.from_json(e) for e in self._list_of(data, "/discovery")]

    def run_sync(
        self,
        url: str,
        args: Json = None,
        *,
        idempotency_key: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> str:
        """``POST /sync/<url>``: runs the task and answers its last stdout line.

        ``args`` is the body: a list of strings for a YAML task (``None`` posts no body, meaning
        no arguments), the parameter object for a built-in one. A run that fails raises
        :class:`~celery_service_client.TaskFailed` (HTTP 200, ``code`` 1; ``msg`` says why,
        ``data`` is the last stdout line).
        """
        data = self._call("POST", f"sync/{url.strip('/')}", args, idempotency_key, timeout)
        return data if isinstance(data, str) else json.dumps(data)

    def run_async(
        self,
        url: str,
        args: Json = None,
        *,
        idempotency_key: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> str:
        """``POST /async/<url>``: starts a session and answers its id (see :meth:`run_sync`)."""
        data = self._call("POST", f"async/{url.strip('/')}", args, idempotency_key, timeout)
        if not isinstance(data, str):
            raise TransportError(f"/async/{url}: expected a session id, got {data!r}")
        return data

    def query(self, session_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Session:
        """``POST /async/query``: one session; :class:`NotFound` once it has expired."""
        data = self._list_of(
            self._call("POST", "async/query", {"session_id": session_id}, timeout=timeout),
            "/async/query",
        )
        if len(data) != 1:
            raise TransportError(f"/async/query: expected one session, got {len(data)}")
        return Session.from_json(data[0])

    def sessions(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> builtins.list[Session]:
        """``POST /async/query`` with no id: every session the service holds, newest first."""
        data = self._call("POST", "async/query", timeout=timeout)
        return [Session.from_json(s) for s in self._list_of(data, "/async/query")]

    def kill(self, session_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Session:
        """``POST /async/kill``: kills the session's processes and answers its final state."""
        return Session.from_json(
            self._call("POST", "async/kill", {"session_id": session_id}, timeout=timeout)
        )

    def wait(
        self,
        session_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
    ) -> Session:
        """Polls :meth:`query` every ``poll_interval`` seconds until the session is done.

        Raises :class:`~celery_service_client.WaitTimeout` (carrying the last state seen) after
        ``timeout`` seconds; the session goes on running, :meth:`kill` it if it should not.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            session = self.query(session_id)
            if session.done:
                return session
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"session {session_id} still running after {timeout} s",
                        session=session,
                    )
                time.sleep(min(poll_interval, left))
            else:
                time.sleep(poll_interval)

    # -- plumbing -------------------------------------------------------------------------------

    @staticmethod
    def _list_of(data: Json, what: str) -> builtins.list[Json]:
        if not isinstance(data, list):
            raise TransportError(f"{what}: expected a list, got {data!r}")
        return data

    def _call(
        self,
        method: str,
        path: str,
        body: Any = _NO_BODY,
        idempotency_key: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Json:
        """One request; the envelope's ``data``, or the error the answer means."""
        headers = dict(self._headers)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        content: bytes | None = None
        if body is not _NO_BODY and body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        url = f"{self.base_url}/{path}"
        try:
            resp = self._http.request(
                method,
                url,
                data=content,
                headers=headers,
                timeout=self.timeout if isinstance(timeout, UseClientDefault) else timeout,
            )
        except requests.RequestException as e:
            raise TransportError(f"{method} {url}: {e}") from e
        try:
            envelope = resp.json()
        except ValueError:
            envelope = None
        if not (isinstance(envelope, dict) and isinstance(envelope.get("code"), int)):
            # Not the service's envelope: a proxy's error page, a route the service lacks (its
            # plain 404), or something that is not this service at all.
            text = resp.text.strip()[:200]
            if resp.ok:
                raise TransportError(f"{method} {url}: HTTP {resp.status_code}, not an envelope")
            raise error_for(resp.status_code, None, text or resp.reason or "", None, resp.headers)
        code: int = envelope["code"]
        data: Json = envelope.get("data")
        if code != 0 or not resp.ok:
            msg = envelope.get("msg")
            raise error_for(
                resp.status_code, code, msg if isinstance(msg, str) else "", data, resp.headers
            )
        return data
