"""Every example of README.md runs here: against the real service serving this repository's own
external-tasks.yaml and collect/ (the tasks the examples name), with the examples' service
address replaced by the test's."""

from __future__ import annotations

import re
import runpy
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import tomllib

from celery_service_client.contrib.django import settings_errors

from harness import HERE, REPO, Redis, Service

README = (HERE.parent / "README.md").read_text()
EXAMPLE_URL = "http://celery-service:8080"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def python_block(first_line: str, nth: int = 0) -> str:
    found = [b for b in blocks("python") if b.startswith(first_line)]
    assert len(found) > nth, f"no python block starting {first_line!r}"
    return found[nth]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(
        tmp_path_factory.mktemp("readme"),
        (REPO / "external-tasks.yaml").read_text(),
        collect=REPO / "collect",
    )
    yield s
    s.close()


def run(code: str, service: Service, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_example", **names}
    exec(compile(code.replace(EXAMPLE_URL, service.url), "README.md", "exec"), namespace)
    return namespace


def test_every_python_block_is_covered() -> None:
    starts = [b.splitlines()[0] for b in blocks("python")]
    assert starts == [
        "# proj/settings.py",
        "# proj/celery.py",
        "# proj/celery.py",
        "from celery_service_client.celery import register_periodic_tasks",
        "from celery_service_client.celery import TASK_NAME",
        "from celery_service_client import Client, TaskFailed, NotFound",
    ]


def test_install_line_names_this_repository_s_package() -> None:
    line = next(b for b in blocks("sh") if b.startswith("pip install"))
    m = re.match(r"pip install '\./(\S+)\[(\S+)\]'", line)
    assert m is not None, line
    project = REPO / m.group(1)
    extras = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert extras["name"] == "celery-service-client"
    assert m.group(2) in extras["optional-dependencies"]


def test_django_settings_example(service: Service) -> None:
    settings = run(python_block("# proj/settings.py"), service)
    assert settings_errors(settings["CELERY_SERVICE"]) == []
    ours = runpy.run_path(str(HERE / "djangoproject/proj/settings.py"))
    assert settings["INSTALLED_APPS"] == ours["INSTALLED_APPS"]
    assert settings["CELERY_BEAT_SCHEDULER"] == ours["CELERY_BEAT_SCHEDULER"]


def test_django_celery_example_is_the_test_project_s() -> None:
    # The file runs in test_django_e2e.py, in the worker and beat of the test project.
    text = (HERE / "djangoproject/proj/celery.py").read_text()
    code = text.split('"""', 2)[2].lstrip("\n")
    assert python_block("# proj/celery.py").removeprefix("# proj/celery.py\n") == code


def test_beat_examples(service: Service, redis_server: Redis, monkeypatch: Any) -> None:
    monkeypatch.setenv("CELERY_SERVICE_URL", service.url)
    names = run(python_block("# proj/celery.py", 1), service)
    app = names["app"]
    assert app.conf.beat_scheduler == "celery_service_client.celery:DiscoveryScheduler"
    app.conf.broker_url = redis_server.url.rsplit("/", 1)[0] + "/3"
    run(
        python_block("from celery_service_client.celery import register_periodic_tasks"),
        service,
        app=app,
    )
    assert set(app.conf.beat_schedule) == {
        "celery-service:sqlsvr/demopython",
        "celery-service:redis/demoperl",
    }
    run(python_block("from celery_service_client.celery import TASK_NAME"), service, app=app)
    assert redis.Redis.from_url(app.conf.broker_url).llen("celery") == 1


def test_client_example(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    names = run(python_block("from celery_service_client import Client"), service)
    assert names["session"].ok and names["session"].message == "hello aaa bbb 123"
    assert names["page"].done
    out = capsys.readouterr().out
    assert "tendb-cluster/demo1 True None" in out and "['hello aaa bbb 123']" in out
