"""Integrations with frameworks around Celery (install the matching extra)."""
