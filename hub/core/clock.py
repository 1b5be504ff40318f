"""UTC time helpers. Everything is stored in UTC and printed in ISO 8601 with an offset."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return `value` in UTC; a naive value is taken to be UTC already (SQLite drops offsets)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat(value: datetime | None) -> str | None:
    """Format as ISO 8601 with an explicit offset, to the second."""
    if value is None:
        return None
    return as_utc(value).isoformat(timespec="seconds")
