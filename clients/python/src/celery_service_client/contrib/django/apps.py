"""The Django app config: registers the system check of the ``CELERY_SERVICE`` setting."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class CeleryServiceConfig(AppConfig):
    """``celery_service_client.contrib.django``, labelled ``celery_service_client``."""

    name = "celery_service_client.contrib.django"
    label = "celery_service_client"
    verbose_name = "celery-service"

    def ready(self) -> None:
        from .checks import check_settings

        checks.register(check_settings)
