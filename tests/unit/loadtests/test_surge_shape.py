"""The surge shape: baseline, 4x ramp, 10x spike and back, scaled to the run's duration."""

from __future__ import annotations

import pytest

from loadtests.shapes import users_at


@pytest.mark.parametrize("duration", [60.0, 600.0, 1200.0])
def test_surge_stages_scale_with_duration(duration: float) -> None:
    def at(reference_seconds: float) -> int | None:
        return users_at(reference_seconds * duration / 1200.0, duration, baseline=10)

    assert at(0) == 10
    assert at(200) == 10
    assert 10 < at(390) < 40
    assert at(600) == 40
    assert at(850) == 100
    assert at(950) == 40
    assert at(1100) == 10
    assert at(1200) is None


def test_surge_ramp_rises_monotonically() -> None:
    counts = [users_at(second, 1200.0, baseline=10) for second in range(240, 541, 10)]

    assert counts == sorted(counts)
    assert counts[0] == 10
    assert counts[-1] == 40


def test_surge_never_drops_below_one_user() -> None:
    assert users_at(0.0, 60.0, baseline=0) == 1
