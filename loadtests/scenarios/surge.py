"""Scenario `surge`: baseline, a 4x rise over five minutes, a 10x spike, back to baseline.

The stages are in `loadtests.shapes`; the baseline user count is the harness's `--users`.
"""

from __future__ import annotations

import os

from locust import LoadTestShape, between, task

from loadtests.scenarios.common import TenantUser
from loadtests.shapes import users_at


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
