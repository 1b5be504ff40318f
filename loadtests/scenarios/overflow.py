"""Scenario `overflow`: contacts arrive on a real arrival curve while one center degrades.

The run replays a day compressed into its duration: each contact user waits between contacts
for an exponential time whose rate follows the profile's hourly arrival curve, so the users
together follow the curve. One center user sends every tenant center's heartbeat every few
seconds with full staff, and from halfway through reports the first center with no agent
available, so the routing board marks it degraded. Every acknowledged contact id is recorded for
reconciliation.
"""

from __future__ import annotations

import os
import random
import time

from locust import constant, task

from loadtests.scenarios.common import TenantUser, config, records

HEARTBEAT_SECONDS = 5.0


def run_seconds() -> float:
    return float(os.environ.get("HUB_LOADTEST_DURATION", "60"))


class ContactUser(TenantUser):
    weight = 9

    def on_start(self) -> None:
        super().on_start()
        self.overflow = config()["overflow"][self.tenant["tenant_id"]]
        self.started = time.monotonic()

    def wait_time(self) -> float:
        curve = self.profile["hourly_arrivals"]
        elapsed = (time.monotonic() - self.started) / max(run_seconds(), 1.0)
        share = curve[min(int(elapsed * 24), 23)]
        # One contact per second on average over the day; a busier hour waits less.
        return random.expovariate(max(share * 24, 0.05))

    @task
    def contact(self) -> None:
        center = random.choice(self.overflow["centers"])
        response = self.client.post(
            "/api/v1/overflow/contacts",
            json={
                "channel": "call",
                "language": random.choice(center["languages"]),
                "service_group": random.choice(center["skills"]),
            },
            headers={"Authorization": f"Bearer {self.overflow['key']}"},
            name="POST /api/v1/overflow/contacts",
        )
        if response.status_code in (200, 201):
            contact_id = response.json().get("contact_id")
            records().ack({"tenant_id": self.tenant["tenant_id"], "contact_id": contact_id})


class CenterUser(TenantUser):
    fixed_count = 1
    wait_time = constant(HEARTBEAT_SECONDS)

    def on_start(self) -> None:
        super().on_start()
        self.started = time.monotonic()

    @task
    def heartbeats(self) -> None:
        degrade_after = run_seconds() / 2
        degraded = time.monotonic() - self.started > degrade_after
        for index, (_tenant_id, overflow) in enumerate(sorted(config()["overflow"].items())):
            for position, center in enumerate(overflow["centers"]):
                available = 0 if degraded and index == 0 and position == 0 else center["agents"]
                self.client.post(
                    f"/api/v1/overflow/centers/{center['id']}/heartbeat",
                    json={"agents_staffed": center["agents"], "agents_available": available},
                    headers={"Authorization": f"Bearer {overflow['key']}"},
                    name="POST /api/v1/overflow/centers/{id}/heartbeat",
                )
