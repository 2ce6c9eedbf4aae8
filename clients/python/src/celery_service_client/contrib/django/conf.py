"""The ``CELERY_SERVICE`` setting: one dict, checked key by key.

.. code-block:: python

    CELERY_SERVICE = {
        "URL": "http://celery-service:8080",   # required
        "TOKEN": None,                         # the service's --auth-token; None: none
        "TIMEOUT": (5, 30),                    # one HTTP call: seconds or (connect, read)
        "DEFAULT_SCHEDULE": None,              # tasks without a crontab: None (no row),
                                               # "0 1 * * *" or {"minute": "0", "hour": "1"}
        "FROZEN": [],                          # task urls whose rows an admin owns
        "RUN_TIMEOUT": 3600,                   # the poller gives up (and kills the run) after
        "POLL_INTERVAL": 5,                    # seconds between two polls of a run
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from celery import Celery
from celery.schedules import crontab
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..._client import DEFAULT_TIMEOUT, HttpTimeout
from ..._models import CRONTAB_KEYS

__all__ = ["SETTING", "ServiceSettings", "configure_celery", "load_settings", "settings_errors"]

#: The name of the setting.
SETTING: Final = "CELERY_SERVICE"
_KEYS: Final = (
    "URL",
    "TOKEN",
    "TIMEOUT",
    "DEFAULT_SCHEDULE",
    "FROZEN",
    "RUN_TIMEOUT",
    "POLL_INTERVAL",
)


@dataclass(frozen=True)
class ServiceSettings:
    """``CELERY_SERVICE``, checked; ``default_schedule`` as the five crontab fields."""

    url: str
    token: str | None = None
    timeout: HttpTimeout = DEFAULT_TIMEOUT
    default_schedule: dict[str, str] | None = None
    frozen: frozenset[str] = field(default_factory=frozenset)
    run_timeout: float = 3600.0
    poll_interval: float = 5.0


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _timeout_error(value: Any) -> str | None:
    if value is None or _positive(value):
        return None
    pair = isinstance(value, (list, tuple)) and len(value) == 2
    if pair and all(v is None or _positive(v) for v in value):
        return None
    return (
        f'{SETTING}["TIMEOUT"] must be seconds (a number above 0), a (connect, read) pair of '
        f"them, or None; got {value!r}"
    )


def schedule_fields(value: Any) -> dict[str, str]:
    """The five crontab fields of a ``DEFAULT_SCHEDULE``; ``ValueError`` saying what is wrong."""
    if isinstance(value, str):
        parts = value.split()
        if len(parts) != 5:
            raise ValueError(f"a crontab string has 5 fields, {value!r} has {len(parts)}")
        minute, hour, day_of_month, month_of_year, day_of_week = parts
        fields = {
            "minute": minute,
            "hour": hour,
            "day_of_month": day_of_month,
            "month_of_year": month_of_year,
            "day_of_week": day_of_week,
        }
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - set(CRONTAB_KEYS))
        if unknown:
            raise ValueError(f"unknown crontab keys {unknown}; known: {list(CRONTAB_KEYS)}")
        fields = {key: str(value.get(key, "*")) for key in CRONTAB_KEYS}
    else:
        raise ValueError(f"expected a crontab string or mapping, got {value!r}")
    crontab(**fields)  # raises ValueError on a field out of range
    return fields


def settings_errors(raw: Any) -> list[str]:
    """Every problem of a ``CELERY_SERVICE`` value, each naming the key and what is wrong."""
    if not isinstance(raw, Mapping):
        return [f"{SETTING} must be a dict, got {type(raw).__name__}"]
    problems = [
        f"{SETTING} has an unknown key {key!r}; known keys: {', '.join(_KEYS)}"
        for key in raw
        if key not in _KEYS
    ]
    url = raw.get("URL")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        problems.append(f'{SETTING}["URL"] must be the service\'s http(s) URL, got {url!r}')
    token = raw.get("TOKEN")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        problems.append(f'{SETTING}["TOKEN"] must be a non-empty string or None, got {token!r}')
    timeout_problem = _timeout_error(raw.get("TIMEOUT"))
    if timeout_problem:
        problems.append(timeout_problem)
    if raw.get("DEFAULT_SCHEDULE") is not None:
        try:
            schedule_fields(raw["DEFAULT_SCHEDULE"])
        except (ValueError, TypeError) as e:
            problems.append(f'{SETTING}["DEFAULT_SCHEDULE"] is not a schedule: {e}')
    frozen = raw.get("FROZEN", [])
    if not isinstance(frozen, (list, tuple, set, frozenset)) or not all(
        isinstance(u, str) and u.strip("/") for u in frozen
    ):
        problems.append(f'{SETTING}["FROZEN"] must be a list of task urls, got {frozen!r}')
    for key in ("RUN_TIMEOUT", "POLL_INTERVAL"):
        if key in raw and not _positive(raw[key]):
            problems.append(f'{SETTING}["{key}"] must be seconds above 0, got {raw[key]!r}')
    return problems


def load_settings(raw: Any = None) -> ServiceSettings:
    """``CELERY_SERVICE`` (or ``raw``), checked; ``ImproperlyConfigured`` listing every
    problem."""
    if raw is None:
        raw = getattr(settings, SETTING, None)
        if raw is None:
            raise ImproperlyConfigured(f"{SETTING} is not set")
    problems = settings_errors(raw)
    if problems:
        raise ImproperlyConfigured("; ".join(problems))
    timeout = raw.get("TIMEOUT", DEFAULT_TIMEOUT)
    default = raw.get("DEFAULT_SCHEDULE")
    return ServiceSettings(
        url=raw["URL"],
        token=raw.get("TOKEN"),
        timeout=tuple(timeout) if isinstance(timeout, list) else timeout,
        default_schedule=None if default is None else schedule_fields(default),
        frozen=frozenset(u.strip("/") for u in raw.get("FROZEN", ())),
        run_timeout=float(raw.get("RUN_TIMEOUT", 3600.0)),
        poll_interval=float(raw.get("POLL_INTERVAL", 5.0)),
    )


def configure_celery(app: Celery) -> None:
    """Gives the project's Celery app the ``CELERY_SERVICE`` settings (``celery_service_url``
    and the rest) and registers the task the rows run (``celery_service.run``).

    Called where the app is made (``proj/celery.py``), which Django imports with its settings:
    a wrong ``CELERY_SERVICE`` is left to the system check to name (``manage.py check``, and a
    Celery worker runs the checks when it starts) rather than failing that import.
    """
    from ...celery import install

    install(app)
    raw = getattr(settings, SETTING, None)
    if raw is None or settings_errors(raw):
        return
    conf = load_settings(raw)
    app.conf.update(
        celery_service_url=conf.url,
        celery_service_token=conf.token,
        celery_service_http_timeout=conf.timeout,
        celery_service_timeout=conf.run_timeout,
        celery_service_poll_interval=conf.poll_interval,
    )
