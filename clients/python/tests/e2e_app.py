"""The Celery app of the end-to-end tests, as a Django project would write it.

The worker and beat import it with ``celery -A e2e_app``, configured by the environment the
fixtures give them; the tests build their own copy with :func:`make_app`.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_service_client.celery import install


def make_app(broker: str, service_url: str) -> Celery:
    app = Celery("e2e", broker=broker, backend=broker)
    app.conf.update(
        celery_service_url=service_url,
        # Fast polls and a short give-up time, so a hung run is killed within the test.
        celery_service_poll_interval=0.2,
        celery_service_timeout=float(os.environ.get("CS_TEST_GIVE_UP", "4")),
        # Faults are retried at most a second apart, so a restart is noticed at once.
        celery_service_max_backoff=1.0,
        # Beat reads /discovery every second, so a YAML edit reaches it at once.
        celery_service_refresh_interval=1,
        beat_scheduler="celery_service_client.celery:DiscoveryScheduler",
        beat_max_loop_interval=1,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )
    install(app)
    return app


app = make_app(
    os.environ.get("CS_TEST_BROKER", "redis://127.0.0.1:6379/0"),
    os.environ.get("CS_TEST_SERVICE_URL", "http://127.0.0.1:8080"),
)
