"""The task in eager mode (how a Django project's own tests run it): it waits in-process."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from celery import Celery

from celery_service_client import Session
from celery_service_client.celery import install

from harness import Service, pid_gone, poll, task

YAML = task("record") + task("hang", script="hang.sh")


def eager_app(service: Service) -> Celery:
    app = Celery("eager-test", set_as_current=False)
    app.conf.update(
        task_always_eager=True,
        celery_service_url=service.url,
        celery_service_poll_interval=0.05,
        celery_service_timeout=1.0,
    )
    return app


def test_eager_run_waits_for_the_session(start_service: Callable[[str], Service]) -> None:
    service = start_service(YAML)
    run = install(eager_app(service))
    final = run.delay("probe/record", ["eager"]).get(timeout=10)
    session = Session.from_json(final)
    assert session.ok
    assert session.args == ["eager"]
    assert (service.out / f"{session.id}.argv").read_text() == "eager\n"


def test_eager_run_is_killed_after_the_timeout(start_service: Callable[[str], Service]) -> None:
    service = start_service(YAML)
    run = install(eager_app(service))
    final = run.apply(args=("probe/hang",), kwargs={"timeout": 0.5}).get(timeout=10)
    session = Session.from_json(final)
    assert session.done
    assert session.error.startswith("killed on request")
    pids = (service.out / f"{session.id}.pids").read_text().split()
    for pid in map(int, pids):
        poll(f"pid {pid} to be gone", partial(pid_gone, pid), timeout=10)
