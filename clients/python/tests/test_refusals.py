"""Every refusal of the real service, typed by the client and ridden out by the poller: 409
(``concurrency_policy: forbid``), 422 (an idempotency key of another task), 429
(``--max-running``) and 503 (a service shutting down), through a Celery worker on the prefork
pool while the service is refused, stopped and started again on the same port."""

from __future__ import annotations

import pickle
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_service_client import (
    CeleryServiceError,
    Client,
    Conflict,
    ServiceUnavailable,
    Session,
    TooManyRequests,
    UnprocessableEntity,
    WaitTimeout,
)
from celery_service_client.celery import TASK_NAME

from e2e_app import make_app
from harness import CeleryProcess, Redis, Service, binary, celery_process, free_port, poll, task

YAML = (
    task("record")
    + task("hang", script="hang.sh")
    + task("solo", "concurrency_policy: forbid", script="hang.sh")
)


def run_args() -> list[str]:
    """One run at a time, and a short shutdown; no drain delay where the binary has one (it
    would keep taking runs for 5 s after SIGTERM)."""
    args = ["--max-running", "1", "--shutdown-timeout", "2s"]
    help_text = subprocess.run(
        [str(binary()), "run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    if "--drain-delay" in help_text:
        args += ["--drain-delay", "0s"]
    return args


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refusals")


@pytest.fixture(scope="module")
def first(dir: Path, port: int) -> Iterator[Service]:
    s = Service(dir, YAML, args=run_args(), address=f"127.0.0.1:{port}")
    yield s
    s.close()


@pytest.fixture(scope="module")
def env(redis_server: Redis, port: int) -> dict[str, str]:
    return {
        "CS_TEST_BROKER": redis_server.url.rsplit("/", 1)[0] + "/2",
        "CS_TEST_SERVICE_URL": f"http://127.0.0.1:{port}",
        "CS_TEST_GIVE_UP": "60",
    }


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], first: Service
) -> Iterator[CeleryProcess]:
    args = ["worker", "--concurrency=1", "--loglevel=INFO", "--hostname=refusals@%h"]
    args += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    dir = tmp_path_factory.mktemp("refusals-worker")
    with celery_process(dir, "worker", args, env, " ready.") as w:
        yield w


def test_409_422_429_from_the_service(first: Service) -> None:
    with Client(first.url) as client:
        solo = client.run_async("probe/solo", idempotency_key="k-solo")
        try:
            # The same key for another task: 422.
            with pytest.raises(UnprocessableEntity) as other:
                client.run_async("probe/record", idempotency_key="k-solo")
            assert other.value.status == 422 and "k-solo" in other.value.msg
            # The same key for the same task: the same session, no new run.
            assert client.run_async("probe/solo", idempotency_key="k-solo") == solo
            # forbid and a run active: 409 naming it.
            with pytest.raises(Conflict) as busy:
                client.run_async("probe/solo")
            assert busy.value.status == 409 and solo in busy.value.msg
            # --max-running 1: 429 with Retry-After.
            with pytest.raises(TooManyRequests) as full:
                client.run_async("probe/record")
            assert full.value.status == 429 and full.value.retry_after == 1.0
        finally:
            client.kill(solo)
    # Celery pickles exceptions: each comes back whole.
    for error in (other.value, busy.value, full.value):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert (back.status, back.code, back.msg, back.retry_after) == (
            error.status,
            error.code,
            error.msg,
            error.retry_after,
        )
    timeout = WaitTimeout("still running", session=None)
    assert pickle.loads(pickle.dumps(timeout)).msg == "still running"


def test_the_poller_rides_out_429(
    first: Service, env: dict[str, str], worker: CeleryProcess
) -> None:
    app = make_app(env["CS_TEST_BROKER"], first.url)
    with Client(first.url) as client:
        hang = client.run_async("probe/hang")
        result = app.send_task(TASK_NAME, args=("probe/record", ["after 429"]))
        worker.wait_for("HTTP 429", timeout=20)
        client.kill(hang)
        session = Session.from_json(result.get(timeout=30))
    assert session.ok and session.args == ["after 429"]


def test_the_poller_rides_out_a_draining_service(
    dir: Path, port: int, first: Service, env: dict[str, str], worker: CeleryProcess
) -> None:
    app = make_app(env["CS_TEST_BROKER"], first.url)
    with Client(first.url) as client:
        hang = client.run_async("probe/hang")
        first.proc.send_signal(signal.SIGTERM)

        def draining() -> bool:
            try:
                client.run_async("probe/record")
            except ServiceUnavailable as e:
                return e.retry_after == 1.0
            except CeleryServiceError:
                return False
            pytest.fail("a run was started after SIGTERM")

        poll("the service to refuse new runs with 503", draining, timeout=10)
        result = app.send_task(TASK_NAME, args=("probe/record", ["after restart"]))
        worker.wait_for("HTTP 503", timeout=20)
        # The active run holds the service up to --shutdown-timeout; then it exits.
        first.proc.wait(30)
        assert not result.ready()
        second = Service(dir, YAML, args=run_args(), address=f"127.0.0.1:{port}")
        try:
            session = Session.from_json(result.get(timeout=30))
            assert session.ok and session.args == ["after restart"]
            assert client.query(session.id) == session
            assert hang not in {s.id for s in client.sessions()}
        finally:
            second.close()
