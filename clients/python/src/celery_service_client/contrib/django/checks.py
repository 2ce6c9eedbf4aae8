"""The system check of the ``CELERY_SERVICE`` setting: each wrong key or value, by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error

from .conf import SETTING, settings_errors


def check_settings(app_configs: Sequence[Any] | None = None, **_: Any) -> list[CheckMessage]:
    """``celery_service_client.E001`` when ``CELERY_SERVICE`` is missing, ``E002`` for each
    wrong key or value."""
    if not hasattr(settings, SETTING):
        return [
            Error(
                f"{SETTING} is not set",
                hint=f'{SETTING} = {{"URL": "http://celery-service:8080"}} at least',
                id="celery_service_client.E001",
            )
        ]
    return [
        Error(problem, id="celery_service_client.E002")
        for problem in settings_errors(getattr(settings, SETTING))
    ]
