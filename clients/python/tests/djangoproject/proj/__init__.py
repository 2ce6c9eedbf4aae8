"""A Django project as the DBA platform runs one: django-celery-beat rows, beat on
DatabaseScheduler, the service's tasks synced by ``manage.py celery_service_sync``."""

from .celery import app as celery_app

__all__ = ["celery_app"]
