"""The project's Celery app, as the README tells a Django project to write it."""

import os

from celery import Celery

from celery_service_client.contrib.django import configure_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
configure_celery(app)  # CELERY_SERVICE into app.conf, and the task celery_service.run
app.autodiscover_tasks()
