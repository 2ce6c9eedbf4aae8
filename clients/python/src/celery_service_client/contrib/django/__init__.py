"""The Django app of celery-service-client: the service's tasks as django-celery-beat rows.

Add ``"celery_service_client.contrib.django"`` to ``INSTALLED_APPS`` (after
``"django_celery_beat"``), set ``CELERY_SERVICE`` in the settings (see :mod:`.conf`), run beat
on django-celery-beat's ``DatabaseScheduler``, and run ``manage.py celery_service_sync`` (or
:func:`.sync.celery_service_sync`) whenever the service's tasks may have changed: it upserts
one ``PeriodicTask`` per scheduled task, named ``celery-service:<url>``, and deletes the rows of
tasks that are gone. :func:`configure_celery` gives the project's Celery app the same settings
and the task the rows run.
"""

from .conf import ServiceSettings, configure_celery, load_settings, settings_errors

__all__ = ["ServiceSettings", "configure_celery", "load_settings", "settings_errors"]
