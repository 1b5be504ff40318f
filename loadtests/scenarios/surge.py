"""Scenario `surge`: baseline, a 4x rise over five minutes, a 10x spike, back to baseline.

The stages follow a 20-minute reference timeline scaled to the run's duration, so a 60 s CI
run passes through the same stages in proportion. The baseline user count is the harness's
`--users`; the stages multiply it.
"""

from __future__ import annotations

import os

from locust import LoadTestShape, between, task

from loadtests.scenarios.common import TenantUser

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


class SurgeShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        duration = float(os.environ.get("HUB_LOADTEST_DURATION", "60"))
        baseline = int(os.environ.get("HUB_LOADTEST_USERS", "2"))
        users = users_at(self.get_run_time(), duration, baseline)
        if users is None:
            return None
        return users, max(1.0, float(users))


class SurgeUser(TenantUser):
    wait_time = between(0.5, 1.5)

    @task
    def operation(self) -> None:
        self.profile_operation()
