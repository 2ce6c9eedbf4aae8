"""``manage.py celery_service_sync``: the service's tasks into django-celery-beat rows."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ....._errors import CeleryServiceError
from ...sync import celery_service_sync


class Command(BaseCommand):
    help = (
        "Upserts one django-celery-beat PeriodicTask per task of celery-service's /discovery "
        "(named celery-service:<url>) and deletes the rows of tasks that are gone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="print what would change; write nothing"
        )
        parser.add_argument(
            "--no-prune", action="store_true", help="keep the rows of tasks that are gone"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = celery_service_sync(dry_run=options["dry_run"], prune=not options["no_prune"])
        except CeleryServiceError as e:
            raise CommandError(f"cannot read the service's /discovery: {e}") from e
        for line in report.lines():
            self.stdout.write(line)
