"""The HTTP client: one method per route of the service, each answer unwrapped from its envelope."""

from __future__ import annotations

import builtins
import enum
import json
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Final, TypeAlias

import requests

from ._errors import TransportError, WaitTimeout, error_for
from ._models import DiscoveryEntry, Json, Route, Session
from ._status import ConfigStatus, OutputPage, Readiness, Record, ResultsPage

__all__ = ["DEFAULT_TIMEOUT", "USE_CLIENT_DEFAULT", "Client", "HttpTimeout", "UseClientDefault"]


class UseClientDefault(enum.Enum):
    """The type of :data:`USE_CLIENT_DEFAULT`."""

    USE_CLIENT_DEFAULT = enum.auto()


#: For a per-call ``timeout``: use the one the :class:`Client` was made with (``None`` means none).
USE_CLIENT_DEFAULT: Final = UseClientDefault.USE_CLIENT_DEFAULT

#: Seconds: one number for both, or ``(connect, read)`` as ``requests`` takes them; ``None``
#: (or a ``None`` in the pair) waits as long as it takes.
HttpTimeout: TypeAlias = float | tuple[float | None, float | None] | None
Timeout: TypeAlias = HttpTimeout | UseClientDefault
Params: TypeAlias = Mapping[str, str | int | None]

#: A client's default: 5 s to connect, 30 s for each read of an answer.
DEFAULT_TIMEOUT: Final = (5.0, 30.0)

_NO_BODY: Final = object()


class Client:
    """A client of one celery-service.

    ``base_url`` is where it listens (``http://celery-service:8080``); ``token``, when given, is
    sent as ``Authorization: Bearer <token>`` (an empty one is refused: pass ``None`` for none);
    ``timeout`` bounds every call unless the call says otherwise: seconds, or a
    ``(connect, read)`` pair (:data:`DEFAULT_TIMEOUT`), ``None`` for none. :meth:`run_sync` waits
    as long as the run takes by default (the task's own ``timeout`` ends it on the service). Task
    ``url``\\ s are in the form ``/discovery`` gives (``tendb-cluster/demo1``).

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
        timeout: HttpTimeout = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        if token is not None and not token.strip():
            raise ValueError("token is empty: pass token=None to send no Authorization header")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = session if session is not None else requests.Session()
        self._owns_http = session is None
        self._headers = {"Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token.strip()}"

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
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> str:
        """``POST /sync/<url>``: runs the task and answers its last stdout line.

        ``args`` is the body: a list of strings for a YAML task (``None`` posts no body, meaning
        no arguments), the parameter object for a built-in one. A run that fails raises
        :class:`~celery_service_client.TaskFailed` (HTTP 200, ``code`` 1; ``msg`` says why,
        ``data`` is the last stdout line). By default it connects within the client's connect
        timeout and then waits for the answer however long the run takes: the task's own
        ``timeout`` (or the service's ``--default-timeout``) ends it, and a client that gave up
        earlier would cancel the run. The service takes no ``Idempotency-Key`` on sync calls.
        """
        if isinstance(timeout, UseClientDefault):
            timeout = (self._connect_timeout(), None)
        data = self._call("POST", f"sync/{url.strip('/')}", args, timeout=timeout)
        return data if isinstance(data, str) else json.dumps(data)

    def run_async(
        self,
        url: str,
        args: Json = None,
        *,
        idempotency_key: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> str:
        """``POST /async/<url>``: starts a session and answers its id (``args`` as in
        :meth:`run_sync`).

        ``idempotency_key``: a second call with the same key for the same task within the
        service's ``--idempotency-window`` answers with the session the first one started (the
        same key for another task: :class:`UnprocessableEntity`). Refusals worth knowing:
        :class:`Conflict` (``concurrency_policy: forbid`` and a run is active),
        :class:`TooManyRequests` (``--max-running``), :class:`ServiceUnavailable` (shutting
        down), :class:`Forbidden` (a read-only token).
        """
        data = self._call("POST", f"async/{url.strip('/')}", args, idempotency_key, timeout=timeout)
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

    def results(
        self,
        *,
        task: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        before: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> ResultsPage:
        """``GET /results``: the result store's records, newest first, filtered by ``task`` (a
        url) and ``status``; ``limit`` 1-1000 (50); ``before`` is the ``next`` of the previous
        page. :class:`ServiceUnavailable` when the store cannot be read now."""
        params: Params = {"task": task, "status": status, "limit": limit, "before": before}
        return ResultsPage.from_json(self._call("GET", "results", params=params, timeout=timeout))

    def iter_results(
        self,
        *,
        task: str | None = None,
        status: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Record]:
        """Every record of :meth:`results`, newest first, page after page."""
        before: str | None = None
        while True:
            page = self.results(task=task, status=status, limit=page_size, before=before)
            yield from page.records
            if page.next is None or not page.records:
                return
            before = page.next

    def output(
        self,
        session_id: str,
        *,
        offset: int = 0,
        task: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> OutputPage:
        """``GET /async/output``: a run's lines from byte ``offset`` of its log (0, or a previous
        page's ``next_offset``). ``task`` (its url) is needed once the session is past its
        retention. 410 (the log rotated past ``offset``) raises ``CeleryServiceError``."""
        params: Params = {"session_id": session_id, "offset": offset, "task": task}
        data = self._call("GET", "async/output", params=params, timeout=timeout)
        return OutputPage.from_json(data)

    def output_stream(
        self,
        session_id: str,
        *,
        offset: int = 0,
        task: str | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Iterator[OutputPage]:
        """``GET /async/output-stream``: the same pages as the run prints them, ending with the
        one whose ``done`` is true. The read timeout bounds the wait for each page, so pass
        ``timeout=(connect, None)`` for a run that can be silent for long."""
        params: Params = {"session_id": session_id, "offset": offset, "task": task}
        resp = self._send("GET", "async/output-stream", params=params, timeout=timeout, stream=True)
        with resp:
            if resp.headers.get("Content-Type", "").split(";")[0] != "text/event-stream":
                self._envelope_data(resp)
                raise TransportError(f"{resp.url}: HTTP {resp.status_code}, not an event stream")
            data: list[str] = []
            try:
                for line in resp.iter_lines(decode_unicode=True):
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:
                        page = OutputPage.from_json(json.loads("\n".join(data)))
                        data = []
                        yield page
                        if page.done:
                            return
            except (requests.RequestException, ValueError) as e:
                raise TransportError(f"{resp.url}: the event stream broke off: {e}") from e
        raise TransportError(f"{resp.url}: the event stream ended before the run was done")

    def config(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> ConfigStatus:
        """``GET /-/config``: the served task config and the run-control settings."""
        return ConfigStatus.from_json(self._call("GET", "-/config", timeout=timeout))

    def reload(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> ConfigStatus:
        """``POST /-/reload``: re-reads the task config now, as a file change or SIGHUP does.
        A rejected file raises :class:`UnprocessableEntity` (``msg`` lists every error) and
        changes nothing."""
        return ConfigStatus.from_json(self._call("POST", "-/reload", timeout=timeout))

    def healthz(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Readiness:
        """``GET /healthz``: the process answers (no token needed)."""
        return Readiness.from_json(self._probe("healthz", timeout))

    def readyz(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Readiness:
        """``GET /readyz``: whether the service takes traffic; a not-ready answer (HTTP 503) is
        returned, not raised, with ``ready`` false and the failing ``checks``."""
        return Readiness.from_json(self._probe("readyz", timeout))

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

    def _connect_timeout(self) -> float | None:
        if isinstance(self.timeout, tuple):
            return self.timeout[0]
        return self.timeout

    def _send(
        self,
        method: str,
        path: str,
        body: Any = _NO_BODY,
        *,
        idempotency_key: str | None = None,
        params: Params | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        stream: bool = False,
    ) -> requests.Response:
        """One request; the answer whatever its status, :class:`TransportError` when none."""
        headers = dict(self._headers)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        content: bytes | None = None
        if body is not _NO_BODY and body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        url = f"{self.base_url}/{path}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            return self._http.request(
                method,
                url,
                params=query,
                data=content,
                headers=headers,
                timeout=self.timeout if isinstance(timeout, UseClientDefault) else timeout,
                stream=stream,
            )
        except requests.RequestException as e:
            raise TransportError(f"{method} {url}: {e}") from e

    def _call(
        self,
        method: str,
        path: str,
        body: Any = _NO_BODY,
        idempotency_key: str | None = None,
        *,
        params: Params | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Json:
        """One request; the envelope's ``data``, or the error the answer means."""
        resp = self._send(
            method, path, body, idempotency_key=idempotency_key, params=params, timeout=timeout
        )
        return self._envelope_data(resp)

    def _probe(self, path: str, timeout: Timeout) -> Json:
        """A probe's answer: a bare ``Readiness`` (no envelope), on 200 and on 503 alike."""
        resp = self._send("GET", path, timeout=timeout)
        try:
            body: Json = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "ready" in body and resp.status_code in (200, 503):
            return body
        raise error_for(resp.status_code, None, resp.text.strip()[:200], None, resp.headers)

    @staticmethod
    def _envelope_data(resp: requests.Response) -> Json:
        """The envelope's ``data``, or the error the answer means."""
        method = resp.request.method
        url = resp.url
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
