"""Fixtures that start the real service, redis-server, a Celery worker and beat, and stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from celery_service_client import Client

from harness import Redis, Service


@pytest.fixture
def start_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Service]]:
    """Starts services on the YAML given; each is stopped when the test ends."""
    started: list[Service] = []

    def start(yaml: str) -> Service:
        service = Service(tmp_path_factory.mktemp("service"), yaml)
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()


@pytest.fixture
def client_of() -> Iterator[Callable[[Service], Client]]:
    clients: list[Client] = []

    def make(service: Service) -> Client:
        client = Client(service.url, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.close()
