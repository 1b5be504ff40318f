"""Scenario `daily`: a normal day, each tenant's real mix of reads and writes.

Every user is a client of one tenant and runs operations drawn from that tenant's profile
shares (filing, status reads, list reads, catalog reads), about one per second.
"""

from __future__ import annotations

from locust import between, task

from loadtests.scenarios.common import TenantUser


class DailyUser(TenantUser):
    wait_time = between(0.5, 1.5)

    @task
    def operation(self) -> None:
        self.profile_operation()
