"""Composition root for the Celery workers."""
