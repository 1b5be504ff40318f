"""Business-hour arithmetic: a table of cases around weekends, holidays and DST changes."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.core.errors import InvalidInput
from tenants.calendar import BusinessCalendar, add_business_hours, sla_deadline
from tenants.manifest import CalendarSpec, Holiday

NEW_YORK = "America/New_York"

WEEKDAY_HOURS = {
    day: ["08:00-18:00"] for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
}
CALENDAR = BusinessCalendar.from_spec(
    CalendarSpec(hours=WEEKDAY_HOURS, holidays=[Holiday(date=date(2026, 12, 25), name="Christmas")])
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


CASES = [
    # (case, start in UTC, business hours, expected UTC)
    ("same day", utc(2027, 3, 1, 14), 2, utc(2027, 3, 1, 16)),
    ("before opening", utc(2027, 3, 1, 11), 1, utc(2027, 3, 1, 14)),
    ("after closing", utc(2027, 3, 1, 23, 30), 1, utc(2027, 3, 2, 14)),
    ("over weekend", utc(2027, 3, 5, 22), 2, utc(2027, 3, 8, 14)),
    ("weekend start", utc(2027, 3, 6, 15), 1, utc(2027, 3, 8, 14)),
    ("over spring forward", utc(2027, 3, 12, 22), 2, utc(2027, 3, 15, 13)),
    ("over fall back", utc(2027, 11, 5, 21), 2, utc(2027, 11, 8, 14)),
    ("over holiday", utc(2026, 12, 24, 22), 3, utc(2026, 12, 28, 15)),
    ("fraction of hour", utc(2027, 3, 1, 14), 0.5, utc(2027, 3, 1, 14, 30)),
    ("several days", utc(2027, 3, 1, 13), 25, utc(2027, 3, 3, 18)),
    ("ends at closing", utc(2027, 3, 1, 13), 10, utc(2027, 3, 1, 23)),
    ("zero hours", utc(2027, 3, 6, 15), 0, utc(2027, 3, 6, 15)),
]


@pytest.mark.parametrize(("case", "start", "hours", "expected"), CASES, ids=[c[0] for c in CASES])
def test_add_business_hours(case, start, hours, expected):
    assert add_business_hours(start, hours, CALENDAR, NEW_YORK) == expected


def test_continuous_day_over_spring_forward():
    calendar = BusinessCalendar.always_open()
    start = utc(2027, 3, 13, 17)
    assert add_business_hours(start, 24, calendar, NEW_YORK) == utc(2027, 3, 14, 17)


def test_range_starting_inside_dst_gap():
    # 02:30 does not exist on 14 March 2027 in New York. The range starts at the change
    # (07:00Z) and ends at 05:00 EDT (09:00Z), so it has 2 real hours.
    calendar = BusinessCalendar.from_spec(CalendarSpec(hours={"sunday": ["02:30-05:00"]}))
    start = utc(2027, 3, 13, 17)
    assert add_business_hours(start, 1, calendar, NEW_YORK) == utc(2027, 3, 14, 8)
    # The remaining half hour falls on the next Sunday, 02:30 EDT (06:30Z) onwards.
    assert add_business_hours(start, 2.5, calendar, NEW_YORK) == utc(2027, 3, 21, 7)


def test_range_over_repeated_hour():
    # 00:00-04:00 on 7 November 2027 has 5 real hours, because 01:00-02:00 happens twice.
    calendar = BusinessCalendar.from_spec(CalendarSpec(hours={"sunday": ["00:00-04:00"]}))
    start = utc(2027, 11, 7, 4)  # local midnight, EDT
    assert add_business_hours(start, 5, calendar, NEW_YORK) == utc(2027, 11, 7, 9)


def test_lunch_break_skipped():
    calendar = BusinessCalendar.from_spec(
        CalendarSpec(hours={"monday": ["09:00-12:00", "13:00-17:00"]})
    )
    start = utc(2027, 3, 1, 16)  # 11:00 EST
    assert add_business_hours(start, 2, calendar, NEW_YORK) == utc(2027, 3, 1, 19)


def test_manifest_calendar_accepted():
    spec = CalendarSpec(hours=WEEKDAY_HOURS)
    assert add_business_hours(utc(2027, 3, 5, 22), 2, spec, NEW_YORK) == utc(2027, 3, 8, 14)


def test_other_time_zone():
    start = utc(2027, 3, 1, 16)  # 08:00 PST
    assert add_business_hours(start, 1, CALENDAR, "America/Los_Angeles") == utc(2027, 3, 1, 17)


def test_naive_start_taken_as_utc():
    assert add_business_hours(datetime(2027, 3, 1, 14), 2, CALENDAR, NEW_YORK) == utc(
        2027, 3, 1, 16
    )


def test_negative_hours_rejected():
    with pytest.raises(InvalidInput):
        add_business_hours(utc(2027, 3, 1, 14), -1, CALENDAR, NEW_YORK)


def test_calendar_without_hours_rejected():
    empty = BusinessCalendar(ranges=((),) * 7, holidays=frozenset())
    with pytest.raises(InvalidInput) as caught:
        add_business_hours(utc(2027, 3, 1, 14), 1, empty, NEW_YORK)
    assert "too little working time" in caught.value.message


def test_sla_deadline_clocks():
    start = utc(2027, 3, 5, 22)
    assert sla_deadline(start, None, "business", CALENDAR, NEW_YORK) is None
    assert sla_deadline(start, 2, "continuous", CALENDAR, NEW_YORK) == utc(2027, 3, 6, 0)
    assert sla_deadline(start, 2, "business", CALENDAR, NEW_YORK) == utc(2027, 3, 8, 14)


def _in_working_time(instant: datetime, zone: ZoneInfo) -> bool:
    local = instant.astimezone(zone)
    minutes = local.hour * 60 + local.minute + local.second / 60
    if local.date() in CALENDAR.holidays:
        return False
    return any(a <= minutes <= b for a, b in CALENDAR.ranges[local.weekday()])


def test_properties_on_random_starts():
    rng = random.Random(311)
    zone = ZoneInfo(NEW_YORK)
    base = utc(2026, 1, 1)
    for _ in range(400):
        start = base + timedelta(minutes=rng.randrange(0, 2 * 366 * 24 * 60))
        first = rng.choice([0.25, 1, 3.5, 8, 10, 27])
        second = rng.choice([0.5, 2, 9, 12])
        end = add_business_hours(start, first, CALENDAR, NEW_YORK)
        assert end - start >= timedelta(hours=first)
        assert _in_working_time(end, zone), (start, first, end)
        chained = add_business_hours(end, second, CALENDAR, NEW_YORK)
        assert chained == add_business_hours(start, first + second, CALENDAR, NEW_YORK)
