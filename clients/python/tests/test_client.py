"""The Client against the real service: typed answers, and a typed error for every refusal."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest

from celery_service_client import (
    BadRequest,
    CeleryServiceError,
    Client,
    Conflict,
    DiscoveryEntry,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Record,
    Route,
    ServiceUnavailable,
    Session,
    TaskFailed,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnprocessableEntity,
    WaitTimeout,
)
from celery_service_client._errors import error_for, parse_retry_after

from harness import Service, free_port, pid_gone, poll, task

YAML = (
    task("record", 'args: ["fixed"]\ndescription: Writes its arguments down')
    + task("fail", script="fail.sh")
    + task("hang", script="hang.sh")
)

StartService = Callable[[str], Service]
ClientOf = Callable[[Service], Client]


@pytest.fixture
def service(start_service: StartService) -> Service:
    return start_service(YAML)


@pytest.fixture
def client(service: Service, client_of: ClientOf) -> Client:
    return client_of(service)


def test_list_gives_routes(client: Client) -> None:
    routes = client.list()
    assert all(isinstance(r, Route) for r in routes)
    assert Route("POST", "/sync/probe/record") in routes
    assert Route("POST", "/async/probe/hang") in routes
    assert Route("GET", "/discovery") in routes


def test_discovery_gives_entries(client: Client) -> None:
    entries = {e.url: e for e in client.discovery()}
    record = entries["probe/record"]
    assert isinstance(record, DiscoveryEntry)
    assert (record.name, record.cluster_type, record.enable) == ("record", "Probe", True)
    assert record.empty_param == []
    assert record.description == "Writes its arguments down"
    assert record.crontab is None
    counter = entries["tendb-ha/counter"]
    assert counter.enable is False
    assert counter.empty_param == {"counter": 0}
    assert counter.crontab is None


def test_run_sync_answers_the_last_stdout_line(client: Client, service: Service) -> None:
    assert client.run_sync("probe/record", ["a b", "$(id)"]) == "recorded 3 args"
    [argv] = service.out.glob("*.argv")
    assert argv.read_text() == "fixed\na b\n$(id)\n"
    # No body means no arguments.
    assert client.run_sync("/probe/record/") == "recorded 1 args"


def test_failed_sync_run_raises_task_failed_with_http_200(client: Client) -> None:
    # A run that fails is not a refused call: HTTP 200, code 1, msg says why, data is stdout.
    with pytest.raises(TaskFailed) as err:
        client.run_sync("probe/fail", ["x"])
    e = err.value
    assert isinstance(e, CeleryServiceError)
    assert (e.status, e.code, e.msg, e.data) == (200, 1, "boom: x", "partial output")


def test_bad_body_raises_bad_request(client: Client) -> None:
    with pytest.raises(BadRequest) as err:
        client.run_sync("probe/record", {"not": "a list"})
    assert (err.value.status, err.value.code) == (400, 1)
    assert "JSON array of strings" in err.value.msg


def test_unknown_task_raises_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as err:
        client.run_async("probe/nothing-here", [])
    assert (err.value.status, err.value.code) == (404, 1)
    assert "no task at" in err.value.msg


def test_unknown_and_malformed_session_ids(client: Client) -> None:
    with pytest.raises(NotFound):
        client.query(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        client.kill(str(uuid.uuid4()))
    with pytest.raises(BadRequest):
        client.query("not-a-uuid")


def test_unreachable_service_raises_transport_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=5) as client,
        pytest.raises(TransportError) as err,
    ):
        client.list()
    assert err.value.status is None


def test_async_run_wait_and_sessions(client: Client, service: Service) -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    sid = client.run_async("probe/record", ["one"])
    session = client.wait(sid, poll_interval=0.05, timeout=20)
    assert isinstance(session, Session)
    assert session.ok and session.done
    assert (session.id, session.task, session.args) == (sid, "probe/record", ["one"])
    assert (session.exit_code, session.message, session.error) == (0, "recorded 2 args", "")
    assert session.start_at.tzinfo is not None and session.start_at >= before
    assert session.end_at is not None and session.end_at >= session.start_at
    assert (service.out / f"{sid}.argv").read_text() == "fixed\none\n"
    assert Session.from_json(session.to_json()) == session
    assert sid in [s.id for s in client.sessions()]


def test_wait_times_out_and_kill_ends_the_run(client: Client, service: Service) -> None:
    sid = client.run_async("probe/hang")
    pids_file = service.out / f"{sid}.pids"

    def pids_written() -> str | None:
        return pids_file.read_text() if pids_file.exists() else None

    pids = poll("the script's pids", pids_written, 10)
    with pytest.raises(WaitTimeout) as err:
        client.wait(sid, poll_interval=0.05, timeout=0.3)
    assert isinstance(err.value, TimeoutError)
    last = err.value.session
    assert last is not None and last.id == sid and not last.done
    assert last.end_at is None and last.exit_code is None

    killed = client.kill(sid)
    assert killed.done and killed.error.startswith("killed on request")
    for pid in map(int, pids.split()):
        poll(f"pid {pid} to end", partial(pid_gone, pid), 10)


def test_run_sync_waits_past_the_read_timeout(start_service: StartService) -> None:
    service = start_service(task("slow", script="slow.sh"))
    # A one-second read timeout for every call but the sync run, which waits for the task.
    with Client(service.url, timeout=(5, 1)) as client:
        assert client.run_sync("probe/slow", ["2"]) == "slept 2 s"
        with pytest.raises(TransportError):
            client.run_sync("probe/slow", ["2"], timeout=(5, 0.5))


def test_results_output_and_stream(client: Client) -> None:
    sid = client.run_async("probe/record", ["one", "two"])
    client.wait(sid, poll_interval=0.05, timeout=20)
    page = client.output(sid)
    assert page.done and [line.text for line in page.lines] == ["recorded 3 args"]
    assert page.lines[0].stream == "stdout" and page.lines[0].time.tzinfo is not None
    assert client.output(sid, offset=page.next_offset).lines == []
    streamed = list(client.output_stream(sid))
    assert streamed[-1].done and [x.text for p in streamed for x in p.lines] == ["recorded 3 args"]
    with pytest.raises(BadRequest):
        client.output("not-a-uuid")

    def recorded() -> Record | None:
        return next((r for r in client.results(task="probe/record").records if r.done), None)

    record = poll("the run in /results", recorded, timeout=10)
    assert (record.session_id, record.path, record.mode, record.status) == (
        sid,
        "probe/record",
        "async",
        "ok",
    )
    assert record.args == ["one", "two"]
    assert record.end is not None and record.end >= record.start
    assert [r.session_id for r in client.iter_results(task="probe/record", page_size=1)] == [sid]


def test_config_reload_and_probes(client: Client, service: Service) -> None:
    config = client.config()
    assert config.task_count >= 3 and config.last_error is None
    assert config.run_control is not None and config.run_control.max_running is None
    assert client.reload().generation == config.generation + 1
    service.yaml.write_text("- name: [broken\n")
    with pytest.raises(UnprocessableEntity) as rejected:
        client.reload()
    assert rejected.value.status == 422
    assert client.config().last_error is not None
    assert client.healthz().ready
    ready = client.readyz()
    assert ready.ready and {c.name for c in ready.checks} >= {"config"}


# The mapping of every status (also those a proxy in front of the service gives) and the
# Retry-After parsing, without any HTTP; test_refusals.py meets each refusal for real.


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (200, TaskFailed),
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (413, PayloadTooLarge),
        (422, UnprocessableEntity),
        (429, TooManyRequests),
        (503, ServiceUnavailable),
        (500, CeleryServiceError),
    ],
)
def test_statuses_map_to_error_classes(status: int, cls: type[CeleryServiceError]) -> None:
    e = error_for(status, 1, "no", None, {"Retry-After": "7"})
    assert type(e) is cls
    assert (e.status, e.code, e.msg, e.retry_after) == (status, 1, "no", 7.0)


def test_retry_after_as_a_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:10 GMT", now=1792567680.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
