"""The poller behind a proxy that fails now and then: a real HTTP proxy in front of the real
service answers its own 502 and 504 pages (not the service's envelope) to some calls, and the
poller retries them until the run's end."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from celery import Celery

from celery_service_client import CeleryServiceError, Client, Session
from celery_service_client.celery import install

from harness import Service, task


class FlakyProxy:
    """Forwards to ``upstream``; the first ``count`` calls of a path in ``fail`` (path:
    ``(count, status)``) get ``status`` instead, after being forwarded for the paths in
    ``forward_first`` (a proxy that timed out waiting for an answer the service did give)."""

    def __init__(
        self,
        upstream: str,
        fail: dict[str, tuple[int, int]],
        forward_first: frozenset[str] = frozenset(),
    ) -> None:
        self.fail = dict(fail)
        self.forward_first = forward_first
        self.answered: list[tuple[str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self, "GET")

            def do_POST(self) -> None:
                proxy.handle(self, "POST")

        self.upstream = upstream
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        path = h.path.split("?")[0]
        count, status = self.fail.get(path, (0, 0))
        if count > 0:
            self.fail[path] = (count - 1, status)
            if path in self.forward_first:
                self.forward(h, method, body)
            page = f"<html><body>{status} from the proxy</body></html>".encode()
            h.send_response(status)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(page)))
            h.end_headers()
            h.wfile.write(page)
            self.answered.append((path, status))
            return
        resp = self.forward(h, method, body)
        h.send_response(resp.status_code)
        h.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
        h.send_header("Content-Length", str(len(resp.content)))
        h.end_headers()
        h.wfile.write(resp.content)
        self.answered.append((path, resp.status_code))

    def forward(self, h: BaseHTTPRequestHandler, method: str, body: bytes) -> requests.Response:
        headers = {k: v for k, v in h.headers.items() if k.lower() != "host"}
        return requests.request(method, self.upstream + h.path, data=body, headers=headers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_to(start_service: Callable[[str], Service]) -> Iterator[Callable[..., FlakyProxy]]:
    proxies: list[FlakyProxy] = []
    service = start_service(task("slow", script="slow.sh"))

    def make(
        fail: dict[str, tuple[int, int]], forward_first: frozenset[str] = frozenset()
    ) -> FlakyProxy:
        proxies.append(FlakyProxy(service.url, fail, forward_first))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


def test_the_client_types_a_proxy_s_page(proxy_to: Callable[..., FlakyProxy]) -> None:
    proxy = proxy_to({"/list": (1, 502)})
    with Client(proxy.url) as client, pytest.raises(CeleryServiceError) as err:
        client.list()
    assert err.value.status == 502 and "from the proxy" in err.value.msg
    assert err.value.code is None


def test_the_poller_retries_502_and_504(proxy_to: Callable[..., FlakyProxy]) -> None:
    # The first two submissions reach the service but their answers are lost (504, a proxy that
    # timed out); the third gets through. Two polls get a 502 page.
    proxy = proxy_to(
        {"/async/probe/slow": (2, 504), "/async/query": (2, 502)},
        forward_first=frozenset({"/async/probe/slow"}),
    )
    app = Celery("proxy-test", set_as_current=False)
    app.conf.update(
        task_always_eager=True,
        celery_service_url=proxy.url,
        celery_service_poll_interval=0.1,
        celery_service_max_backoff=0.5,
        celery_service_timeout=30,
    )
    run = install(app)
    session = Session.from_json(run.apply(args=("probe/slow", ["1"])).get(timeout=30))
    assert session.ok and session.message == "slept 1 s"
    assert proxy.answered[:3] == [
        ("/async/probe/slow", 504),
        ("/async/probe/slow", 504),
        ("/async/probe/slow", 200),
    ]
    assert proxy.answered.count(("/async/query", 502)) == 2
    # Retried with the same key: one run on the service for all three submissions.
    with Client(proxy.url) as client:
        assert [s.id for s in client.sessions()] == [session.id]
