"""Celery tasks of the request lifecycle (routing to agencies, SLA checks)."""
