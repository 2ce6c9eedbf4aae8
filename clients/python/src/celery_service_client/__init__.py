"""Client for celery-service, the HTTP service that runs a DBA team's scheduled scripts.

:class:`Client` calls the service; what it answers comes back as dataclasses (:class:`Session`,
:class:`DiscoveryEntry`, :class:`Route`) and every refusal as a :class:`CeleryServiceError`
subclass. :mod:`celery_service_client.celery` (install the ``[celery]`` extra) schedules the
service's tasks with Celery beat.
"""

from ._client import USE_CLIENT_DEFAULT, Client, UseClientDefault
from ._errors import (
    BadRequest,
    CeleryServiceError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TaskFailed,
    TooManyRequests,
    TransportError,
    Unauthorized,
    WaitTimeout,
)
from ._models import CRONTAB_KEYS, DiscoveryEntry, Json, Route, Session

__all__ = [
    "CRONTAB_KEYS",
    "USE_CLIENT_DEFAULT",
    "BadRequest",
    "CeleryServiceError",
    "Client",
    "Conflict",
    "DiscoveryEntry",
    "Json",
    "NotFound",
    "PayloadTooLarge",
    "Route",
    "ServiceUnavailable",
    "Session",
    "TaskFailed",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UseClientDefault",
    "WaitTimeout",
]
