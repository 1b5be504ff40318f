import pytest

from failover.hysteresis import SurgeDetector, Thresholds

T = Thresholds(high_seconds=90, low_seconds=30, hold_on_seconds=120, hold_off_seconds=300)


def run(curve, step=10.0, thresholds=T):
    """Feed (wait) samples every `step` seconds; return the times the switch changed."""
    detector = SurgeDetector(thresholds)
    changes = []
    for i, wait in enumerate(curve):
        if detector.observe(i * step, wait):
            changes.append((i * step, detector.overflow_on))
    return detector, changes


def test_oscillation_around_high_never_switches_on():
    # Above the high threshold for 60 s, then just below it for 60 s, all day.
    curve = ([100] * 6 + [85] * 6) * 360
    detector, changes = run(curve)
    assert changes == []
    assert detector.overflow_on is False


def test_oscillation_around_low_never_switches_off():
    detector, changes = run([200] * 13)
    assert detector.overflow_on is True
    curve = ([20] * 20 + [40] * 5) * 200
    for i, wait in enumerate(curve):
        assert detector.observe(130 + i * 10.0, wait) is False
    assert detector.overflow_on is True


def test_fast_oscillation_across_both_thresholds_does_not_flap():
    # Every sample alternates between far above high and far below low.
    detector, changes = run([200, 0] * 2000)
    assert changes == []


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        # Above high for exactly the hold time: on at 120 s.
        ([100] * 13, [(120.0, True)]),
        # Above high for 110 s only: stays off.
        ([100] * 12 + [50] * 20, []),
        # A dip between the thresholds restarts the hold.
        ([100] * 10 + [60] + [100] * 13, [(230.0, True)]),
        # On, then below low for the off hold time: off 300 s after the first low sample.
        ([100] * 13 + [10] * 31, [(120.0, True), (430.0, False)]),
        # On, then between the thresholds for a long time: stays on (recovery needs low).
        ([100] * 13 + [60] * 100, [(120.0, True)]),
        # On, below low for 290 s, a spike, then low again: the off hold restarts.
        ([100] * 13 + [10] * 30 + [95] + [10] * 31, [(120.0, True), (740.0, False)]),
        # Exactly at the high threshold is not above it.
        ([90] * 50, []),
    ],
)
def test_threshold_hold_and_recovery_table(curve, expected):
    _, changes = run(curve)
    assert changes == expected


def test_zero_hold_switches_on_first_sample():
    thresholds = Thresholds(high_seconds=90, low_seconds=30, hold_on_seconds=0, hold_off_seconds=0)
    detector = SurgeDetector(thresholds)
    assert detector.observe(0, 91) is True
    assert detector.observe(1, 29) is True
    assert detector.overflow_on is False


def test_low_not_below_high_is_rejected():
    with pytest.raises(ValueError, match="must be below the high threshold"):
        Thresholds(high_seconds=30, low_seconds=30)


def test_outage_does_not_count_toward_off_hold():
    detector, _ = run([200] * 13)
    assert detector.overflow_on is True
    # Ten minutes without any reachable center, then low waits from 730 s on.
    for _second in range(130, 730, 10):
        detector.observe_outage()
        assert detector.overflow_on is True
    changes = []
    for second in range(730, 1100, 10):
        if detector.observe(float(second), 10):
            changes.append((float(second), detector.overflow_on))
    assert changes == [(1030.0, False)]


def test_outage_restarts_on_hold():
    thresholds = Thresholds(high_seconds=90, low_seconds=30, hold_on_seconds=120)
    detector = SurgeDetector(thresholds)
    assert detector.observe(0, 200) is False
    assert detector.observe(100, 200) is False
    detector.observe_outage()
    assert detector.observe(110, 200) is False
    assert detector.observe(220, 200) is False
    assert detector.observe(230, 200) is True
