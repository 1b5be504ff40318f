"""Business calendars: SLA deadlines counted in a tenant's working hours.

Working hours are local wall-clock ranges, so an 08:00-18:00 day starts at 08:00 local time
before and after a daylight-saving change. Elapsed time is counted in real (UTC) time, so the
night of a DST change inside a working range counts 23 or 25 hours of a 00:00-24:00 day.
Holidays are local dates with no working hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from hub.core.clock import as_utc
from hub.core.errors import InvalidInput
from tenants.manifest import DEADLINE_SEARCH_DAYS, WEEKDAYS, CalendarSpec, parse_hours_range

# A deadline further away than this is a configuration mistake (an SLA of years).
MAX_SEARCH_DAYS = DEADLINE_SEARCH_DAYS


@dataclass(frozen=True)
class BusinessCalendar:
    """Working ranges per weekday (Monday is 0) in minutes after local midnight, and holidays."""

    ranges: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[date]

    @classmethod
    def from_spec(cls, spec: CalendarSpec) -> BusinessCalendar:
        ranges = tuple(
            tuple(parse_hours_range(text) for text in spec.hours.get(day, ())) for day in WEEKDAYS
        )
        return cls(ranges=ranges, holidays=frozenset(h.date for h in spec.holidays))

    @classmethod
    def always_open(cls) -> BusinessCalendar:
        """Return a calendar with every hour of every day, for SLAs on the continuous clock."""
        return cls(ranges=tuple(((0, 24 * 60),) for _ in WEEKDAYS), holidays=frozenset())

    def ranges_on(self, day: date) -> tuple[tuple[int, int], ...]:
        if day in self.holidays:
            return ()
        return self.ranges[day.weekday()]


# Intake computes a deadline for every request, and requests of the same days look up the
# same working ranges: without the cache the time zone conversions were 5 % of the CPU time
# of a batch of POSTs. One entry per day, range end and zone.
@lru_cache(maxsize=8192)
def _local_instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    """Return the UTC instant of a local wall-clock time; 24:00 is the next midnight.

    A wall-clock time skipped by a spring-forward change maps to the moment of the change, the
    first instant whose local time is not earlier. A repeated one (fall back) maps to its
    first occurrence (fold=0).
    """
    naive = datetime.combine(day, time()) + timedelta(minutes=minutes)
    instant = naive.replace(tzinfo=zone).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == naive:
        return instant

    # Inside a gap: fold=1 reads the time with the offset after the change, which lands before
    # the change, and fold=0 lands after it. Bisect between them for the change itself.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = instant
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


# Manifest calendars converted before, by the identity of their spec, which is frozen. Intake
# computes a deadline for every request, and parsing the tenant's hours each time cost more
# than the search itself.
_CONVERTED_MAX = 64
_converted_specs: dict[int, tuple[CalendarSpec, BusinessCalendar]] = {}


def _converted(spec: CalendarSpec) -> BusinessCalendar:
    known = _converted_specs.get(id(spec))
    # The spec is kept with its calendar, so its id cannot be reused by another spec meanwhile.
    if known is not None and known[0] is spec:
        return known[1]
    if len(_converted_specs) >= _CONVERTED_MAX:
        _converted_specs.clear()
    calendar = BusinessCalendar.from_spec(spec)
    _converted_specs[id(spec)] = (spec, calendar)
    return calendar


def add_business_hours(
    start_utc: datetime,
    hours: float,
    calendar: BusinessCalendar | CalendarSpec,
    tz: str | ZoneInfo,
) -> datetime:
    """Return the UTC instant `hours` working hours after `start_utc` on `calendar` in `tz`.

    `calendar` is a `BusinessCalendar`, or a manifest `CalendarSpec` that is converted first.

    A start outside working hours counts from the next working range. `hours` of 0 returns the
    start unchanged. Raises InvalidInput for negative hours or when the calendar has no
    working time within `MAX_SEARCH_DAYS`.
    """
    if hours < 0:
        raise InvalidInput(f"hours must be 0 or more, got {hours}")
    if isinstance(calendar, CalendarSpec):
        calendar = _converted(calendar)
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    current = as_utc(start_utc)
    remaining = timedelta(hours=hours)
    if not remaining:
        return current

    day = current.astimezone(zone).date() - timedelta(days=1)
    last_day = day + timedelta(days=MAX_SEARCH_DAYS)
    while day <= last_day:
        for start_minutes, end_minutes in calendar.ranges_on(day):
            range_start = _local_instant(day, start_minutes, zone)
            range_end = _local_instant(day, end_minutes, zone)
            if range_end <= current:
                continue
            current = max(current, range_start)
            available = range_end - current
            if remaining <= available:
                return current + remaining
            remaining -= available
            current = range_end
        day += timedelta(days=1)
    raise InvalidInput(
        f"the business calendar has too little working time for {hours} hours within "
        f"{MAX_SEARCH_DAYS} days; check its hours and holidays"
    )


def sla_deadline(
    start_utc: datetime,
    sla_hours: float | None,
    clock: str,
    calendar: BusinessCalendar | CalendarSpec,
    tz: str | ZoneInfo,
) -> datetime | None:
    """Return the SLA deadline: `sla_hours` on the business calendar, or elapsed hours when
    `clock` is `continuous`. None when the service has no SLA target."""
    if sla_hours is None:
        return None
    if clock == "continuous":
        return as_utc(start_utc) + timedelta(hours=sla_hours)
    return add_business_hours(start_utc, sla_hours, calendar, tz)
