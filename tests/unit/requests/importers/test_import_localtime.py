"""Local export times become UTC instants, with DST gaps and repeats handled and counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hub.core.errors import InvalidInput
from hub.requests.importers.localtime import LocalTimes, is_ambiguous, load_zone

NEW_YORK = load_zone("America/New_York")
LOS_ANGELES = load_zone("America/Los_Angeles")

# (zone, local wall time, expected UTC instant)
AMBIGUOUS = [
    # Clocks went back at 02:00 EDT on 2016-11-06; 01:xx happened twice. fold=0 is the EDT one.
    (NEW_YORK, datetime(2016, 11, 6, 1, 0, 0), datetime(2016, 11, 6, 5, 0, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2016, 11, 6, 1, 30, 0), datetime(2016, 11, 6, 5, 30, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2016, 11, 6, 1, 59, 59), datetime(2016, 11, 6, 5, 59, 59, tzinfo=UTC)),
    (LOS_ANGELES, datetime(2014, 11, 2, 1, 15), datetime(2014, 11, 2, 8, 15, tzinfo=UTC)),
]

NONEXISTENT = [
    # Clocks went forward at 02:00 EST on 2019-03-10; 02:xx never happened. Shifted one hour on.
    (NEW_YORK, datetime(2019, 3, 10, 2, 0, 0), datetime(2019, 3, 10, 7, 0, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2019, 3, 10, 2, 30, 0), datetime(2019, 3, 10, 7, 30, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2019, 3, 10, 2, 59, 59), datetime(2019, 3, 10, 7, 59, 59, tzinfo=UTC)),
    (LOS_ANGELES, datetime(2015, 3, 8, 2, 45), datetime(2015, 3, 8, 10, 45, tzinfo=UTC)),
]

ORDINARY = [
    (NEW_YORK, datetime(2016, 11, 6, 0, 59, 59), datetime(2016, 11, 6, 4, 59, 59, tzinfo=UTC)),
    (NEW_YORK, datetime(2016, 11, 6, 2, 0, 0), datetime(2016, 11, 6, 7, 0, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2019, 3, 10, 1, 59, 59), datetime(2019, 3, 10, 6, 59, 59, tzinfo=UTC)),
    (NEW_YORK, datetime(2019, 3, 10, 3, 0, 0), datetime(2019, 3, 10, 7, 0, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2019, 7, 1, 12, 0), datetime(2019, 7, 1, 16, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2019, 1, 1, 12, 0), datetime(2019, 1, 1, 17, 0, tzinfo=UTC)),
]


@pytest.mark.parametrize(("zone", "local", "expected"), AMBIGUOUS)
def test_ambiguous_hour_takes_first_occurrence(zone, local, expected):
    times = LocalTimes(zone)
    assert times.to_utc(local) == expected
    assert times.ambiguous == 1
    assert times.nonexistent == 0
    assert is_ambiguous(local, zone)


@pytest.mark.parametrize(("zone", "local", "expected"), NONEXISTENT)
def test_missing_hour_shifts_forward(zone, local, expected):
    times = LocalTimes(zone)
    result = times.to_utc(local)
    assert result == expected
    assert result.astimezone(zone).replace(tzinfo=None) == local + timedelta(hours=1)
    assert times.nonexistent == 1
    assert times.ambiguous == 0


@pytest.mark.parametrize(("zone", "local", "expected"), ORDINARY)
def test_ordinary_time_is_not_counted(zone, local, expected):
    times = LocalTimes(zone)
    assert times.to_utc(local) == expected
    assert times.counts() == {"ambiguous": 0, "nonexistent": 0}


def test_time_with_offset_keeps_offset():
    times = LocalTimes(NEW_YORK)
    # A 02:30 wall time inside the New York gap is fine when it carries its own offset.
    value = datetime(2019, 3, 10, 2, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert times.to_utc(value) == datetime(2019, 3, 10, 7, 30, tzinfo=UTC)
    assert times.counts() == {"ambiguous": 0, "nonexistent": 0}


def test_same_input_same_instant():
    first, second = LocalTimes(NEW_YORK), LocalTimes(NEW_YORK)
    local = datetime(2016, 11, 6, 1, 30)
    assert first.to_utc(local) == second.to_utc(local)


def test_examples_are_capped():
    times = LocalTimes(NEW_YORK, max_examples=2)
    for minute in range(5):
        times.to_utc(datetime(2019, 3, 10, 2, minute))
    assert times.nonexistent == 5
    assert times.examples["nonexistent"] == ["2019-03-10 02:00:00", "2019-03-10 02:01:00"]


def test_unknown_zone_is_invalid_input():
    with pytest.raises(InvalidInput, match="Mars/Olympus"):
        load_zone("Mars/Olympus")
