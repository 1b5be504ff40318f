"""UTC time helpers. Everything is stored in UTC and printed in ISO 8601 with an offset."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


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


def local_and_utc(value: datetime, zone: str) -> str:
    """Format a time to the minute in the IANA time zone `zone` and in UTC, such as
    `2026-12-06 06:24 EST (2026-12-06 11:24 UTC)`."""
    utc = as_utc(value)
    local = utc.astimezone(ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M %Z} ({utc:%Y-%m-%d %H:%M} UTC)"
