"""Scenario `alert-storm`: one alert to a large subscriber base while intake continues.

Most users file and read requests on the daily mix. One emergency-manager user subscribes the
residents the harness prepared (each with a loopback webhook address and test opt-in), then
composes a CAP Test alert over their area, has a second emergency manager approve it, sends it
and records its id. After the run the harness checks that every subscriber received exactly
one delivery.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from locust import between, task

from loadtests.scenarios.common import TenantUser, config, records


class IntakeUser(TenantUser):
    weight = 9
    wait_time = between(0.5, 1.5)

    @task
    def operation(self) -> None:
        self.profile_operation()


class EmergencyManager(TenantUser):
    fixed_count = 1
    wait_time = between(1, 2)

    def on_start(self) -> None:
        super().on_start()
        self.alert = config()["alert"]
        self.tenant = next(
            t for t in config()["tenants"] if t["tenant_id"] == self.alert["tenant_id"]
        )
        self.sent = False

    @staticmethod
    def _auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def _subscribe_all(self) -> int:
        subscribed = 0
        consent = datetime.now(UTC).isoformat(timespec="seconds")
        points = self.tenant["points"]
        for index, url in enumerate(self.alert["subscriber_urls"]):
            lat, lon = points[index % len(points)]
            response = self.client.post(
                "/api/v1/alert-subscriptions",
                json={
                    "places": [[lat, lon]],
                    "languages": [random.choice(["en", "es"])],
                    "channels": {"webhook": url},
                    "test_opt_in": True,
                    "consent_at": consent,
                },
                headers=self._auth(self.tenant["api_key"]),
                name="POST /api/v1/alert-subscriptions",
            )
            subscribed += int(response.status_code == 201)
        return subscribed

    @task
    def storm(self) -> None:
        if self.sent:
            return
        self.sent = True
        subscribed = self._subscribe_all()
        manager = self._auth(self.alert["manager_key"])
        created = self.client.post(
            "/api/v1/alerts",
            json=self.alert["document"],
            headers=manager,
            name="POST /api/v1/alerts",
        )
        if created.status_code != 201:
            return
        alert_id = created.json()[0]["id"]
        # Test alerts may need no approval; a refused approval shows in the failure table.
        self.client.post(
            f"/api/v1/alerts/{alert_id}/approve",
            headers=self._auth(self.alert["approver_key"]),
            name="POST /api/v1/alerts/{id}/approve",
        )
        self.client.post(
            f"/api/v1/alerts/{alert_id}/send",
            headers=manager,
            name="POST /api/v1/alerts/{id}/send",
        )
        records().ack(
            {"tenant_id": self.tenant["tenant_id"], "alert_id": alert_id, "subscribers": subscribed}
        )
