"""The demo's overflow replay ends inside the partners' opening hours, whenever it runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.cli.demo_overflow import replay_end


@pytest.mark.parametrize(
    ("now", "end"),
    [
        # Saturday 00:50 in Boston: the replay ends Friday 11:00 (EST, UTC-5).
        (datetime(2026, 12, 5, 5, 50, tzinfo=UTC), datetime(2026, 12, 4, 16, 0, tzinfo=UTC)),
        # Monday 09:00 in Boston: before 11:00, so the Friday before.
        (datetime(2026, 12, 7, 14, 0, tzinfo=UTC), datetime(2026, 12, 4, 16, 0, tzinfo=UTC)),
        # Monday 11:00 exactly: that moment.
        (datetime(2026, 12, 7, 16, 0, tzinfo=UTC), datetime(2026, 12, 7, 16, 0, tzinfo=UTC)),
        # Wednesday 15:30 in summer time (EDT, UTC-4): the same day at 11:00.
        (datetime(2026, 7, 15, 19, 30, tzinfo=UTC), datetime(2026, 7, 15, 15, 0, tzinfo=UTC)),
    ],
)
def test_replay_ends_weekday_morning(now, end):
    assert replay_end(now) == end
