"""Scenario `overflow`: contacts arrive on a real arrival curve while one center degrades.

The contact rate follows the profile's hourly arrival curve compressed into the run: each user
paces itself so the sum of users follows the curve. Halfway through, one center reports no
agents available, so the hub should route new contacts to its partners.
NOTE: the contact endpoints follow the documented JSON API (`/api/v1/overflow/contacts` and
`/api/v1/overflow/centers/{id}/state`); adjust the paths here if the overflow API names them
differently.
"""

from __future__ import annotations

import os
import random
import time

from locust import task

from loadtests.scenarios.common import TenantUser, config, records


class ContactUser(TenantUser):
    def on_start(self) -> None:
        super().on_start()
        self.overflow = config()["overflow"]
        self.started = time.monotonic()
        self.duration = float(os.environ.get("HUB_LOADTEST_DURATION", "60"))
        self.degraded = False

    def wait_time(self) -> float:
        # The run replays 24 hours; a busier hour means a shorter wait between contacts.
        curve = self.profile["hourly_arrivals"]
        elapsed = (time.monotonic() - self.started) / max(self.duration, 1.0)
        share = curve[min(int(elapsed * 24), 23)]
        mean_share = 1.0 / 24
        return random.expovariate(max(share / mean_share, 0.05))

    @task
    def contact(self) -> None:
        headers = {"Authorization": f"Bearer {self.overflow['agent_key']}"}
        elapsed = time.monotonic() - self.started
        if not self.degraded and elapsed > self.duration / 2 and self.overflow.get("degrade"):
            self.degraded = True
            self.client.post(
                f"/api/v1/overflow/centers/{self.overflow['degrade']}/state",
                json={"agents_available": 0},
                headers=headers,
                name="POST /api/v1/overflow/centers/{id}/state",
            )
        response = self.client.post(
            "/api/v1/overflow/contacts",
            json={
                "tenant_id": self.tenant["tenant_id"],
                "language": random.choice(["en", "es"]),
                "skill": self.service_code(),
            },
            headers=headers,
            name="POST /api/v1/overflow/contacts",
        )
        if response.status_code in (200, 201):
            contact_id = response.json().get("id")
            records().ack({"tenant_id": self.tenant["tenant_id"], "contact_id": contact_id})
