"""User counts over time for the surge scenario, kept apart from Locust so tests can import it.

The stages follow a 20-minute reference timeline scaled to the run's duration, so a 60 s CI
run passes through the same stages in proportion. The stages multiply the baseline user count.
"""

from __future__ import annotations

REFERENCE_SECONDS = 1200.0
# (end of stage in reference seconds, user multiple at its end, ramp from the previous multiple)
STAGES = (
    (240.0, 1.0, False),  # baseline
    (540.0, 4.0, True),  # rise to 4x over five minutes
    (780.0, 4.0, False),  # hold the surge
    (900.0, 10.0, False),  # spike to 10x
    (1020.0, 4.0, False),  # back to the surge level
    (1200.0, 1.0, False),  # back to baseline
)


def users_at(elapsed: float, duration: float, baseline: int) -> int | None:
    """Return the user count at `elapsed` seconds of a `duration` run, or None when it ends."""
    if elapsed >= duration:
        return None
    reference = elapsed * REFERENCE_SECONDS / duration
    previous_end, previous_multiple = 0.0, 1.0
    for end, multiple, ramp in STAGES:
        if reference < end:
            if ramp:
                progress = (reference - previous_end) / (end - previous_end)
                multiple = previous_multiple + (multiple - previous_multiple) * progress
            return max(1, round(baseline * multiple))
        previous_end, previous_multiple = end, multiple
    return max(1, baseline)
