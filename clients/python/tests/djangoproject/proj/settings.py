"""Settings of the test project; the tests give the database, broker and service by env."""

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_celery_beat",
    "celery_service_client.contrib.django",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CS_TEST_DB", str(BASE_DIR / "db.sqlite3")),
        # Beat, the worker, the tests and manage.py share the file.
        "OPTIONS": {"timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_broker = os.environ.get("CS_TEST_BROKER", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = _broker
CELERY_RESULT_BACKEND = _broker
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat looks at the rows every second, so a sync reaches it at once.
CELERY_BEAT_MAX_LOOP_INTERVAL = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

CELERY_SERVICE: dict[str, Any] = {
    "URL": os.environ.get("CS_TEST_SERVICE_URL", "http://127.0.0.1:8080"),
    "TOKEN": os.environ.get("CS_TEST_TOKEN") or None,
    "TIMEOUT": (5, 30),
    "DEFAULT_SCHEDULE": None,
    "FROZEN": [u for u in os.environ.get("CS_TEST_FROZEN", "").split(",") if u],
    "RUN_TIMEOUT": float(os.environ.get("CS_TEST_GIVE_UP", "60")),
    "POLL_INTERVAL": 0.2,
}
