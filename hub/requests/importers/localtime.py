"""Local wall-clock times from exports, turned into UTC with the tenant's time zone.

City exports (NYC, San Francisco, Boston) write times without an offset, in the city's local
time. Two kinds of local time do not map to exactly one instant:

- An ambiguous time falls in the hour repeated when clocks go back (01:30 on the first Sunday
  of November in New York happens twice). It is read with `fold=0`, the first occurrence, which
  is still daylight time. The rule is fixed so that importing a file twice gives the same
  instants.
- A nonexistent time falls in the hour skipped when clocks go forward (02:30 on the second
  Sunday of March in New York). It is shifted forward by the length of the gap, so 02:30
  becomes 03:30 daylight time, the instant a clock that missed the change would have meant.

Both cases are counted, so the import report states how many times were adjusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.core.errors import InvalidInput


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA zone `name`, or raise InvalidInput naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(
            f"unknown time zone {name!r}; use an IANA name such as America/New_York"
        ) from exc


def is_ambiguous(naive: datetime, zone: ZoneInfo) -> bool:
    """True when `naive` occurs twice in `zone` (the repeated hour after clocks go back)."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    return first.utcoffset() != second.utcoffset() and _exists(naive, zone)


def _exists(naive: datetime, zone: ZoneInfo) -> bool:
    # A wall time exists when converting it to UTC and back gives the same wall time.
    aware = naive.replace(tzinfo=zone)
    round_trip = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return round_trip == naive


@dataclass
class LocalTimes:
    """Converts naive local times of one import to UTC and counts DST adjustments."""

    zone: ZoneInfo
    ambiguous: int = 0
    nonexistent: int = 0
    # Examples of adjusted wall times (at most `max_examples` of each kind), for the report.
    examples: dict[str, list[str]] = field(
        default_factory=lambda: {"ambiguous": [], "nonexistent": []}
    )
    max_examples: int = 5

    def to_utc(self, value: datetime) -> datetime:
        """Return `value` in UTC: an aware value keeps its offset, a naive one is local time."""
        if value.tzinfo is not None:
            return value.astimezone(UTC)

        if not _exists(value, self.zone):
            # Gap: fold=0 applies the offset in force before the change, which lands the
            # instant after the gap by exactly the gap's length.
            shifted = value.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
            self.nonexistent += 1
            self._example("nonexistent", value)
            return shifted

        if is_ambiguous(value, self.zone):
            self.ambiguous += 1
            self._example("ambiguous", value)
        return value.replace(tzinfo=self.zone, fold=0).astimezone(UTC)

    def _example(self, kind: str, value: datetime) -> None:
        bucket = self.examples[kind]
        if len(bucket) < self.max_examples:
            bucket.append(value.isoformat(sep=" "))

    def counts(self) -> dict[str, int]:
        return {"ambiguous": self.ambiguous, "nonexistent": self.nonexistent}
