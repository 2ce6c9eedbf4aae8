"""Client for celery-service, the HTTP service that runs a DBA team's scheduled scripts.

:class:`Client` calls the service; what it answers comes back as dataclasses (:class:`Session`,
:class:`DiscoveryEntry`, :class:`Route`) and every refusal as a :class:`CeleryServiceError`
subclass. :mod:`celery_service_client.celery` (install the ``[celery]`` extra) schedules the
service's tasks with Celery beat.
"""

from typing import Final

from ._client import DEFAULT_TIMEOUT, USE_CLIENT_DEFAULT, Client, HttpTimeout, UseClientDefault
from ._errors import (
    BadRequest,
    CeleryServiceError,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TaskFailed,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnprocessableEntity,
    WaitTimeout,
)
from ._models import CRONTAB_KEYS, DiscoveryEntry, Json, Route, Session
from ._status import (
    Check,
    ConfigStatus,
    OutputLine,
    OutputPage,
    Readiness,
    Record,
    ReloadFailure,
    ResultsPage,
    RunControlConfig,
)

#: This package's version.
__version__ = "0.2.0"
#: The celery-service versions this client is written for and tested against (PEP 440): the
#: routes, fields and statuses of the service's 0.1 API.
SERVICE_VERSIONS: Final = ">=0.1.0,<0.2"

__all__ = [
    "CRONTAB_KEYS",
    "DEFAULT_TIMEOUT",
    "SERVICE_VERSIONS",
    "USE_CLIENT_DEFAULT",
    "BadRequest",
    "CeleryServiceError",
    "Check",
    "Client",
    "ConfigStatus",
    "Conflict",
    "DiscoveryEntry",
    "Forbidden",
    "HttpTimeout",
    "Json",
    "NotFound",
    "OutputLine",
    "OutputPage",
    "PayloadTooLarge",
    "Readiness",
    "Record",
    "ReloadFailure",
    "ResultsPage",
    "Route",
    "RunControlConfig",
    "ServiceUnavailable",
    "Session",
    "TaskFailed",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnprocessableEntity",
    "UseClientDefault",
    "WaitTimeout",
    "__version__",
]
