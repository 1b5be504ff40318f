"""Helpers for tests that watch PostgreSQL locks."""

from __future__ import annotations

# Sessions of the test's own database that wait for an advisory lock. Other databases on the
# shared server are left out, so another test's waiter cannot stand in for this one's.
ADVISORY_WAITERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
