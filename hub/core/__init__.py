"""Shared foundations: settings, database, tenant context, errors, logging, metrics, outbox."""
