"""Scenario `alert-storm`: one alert to a large subscriber base while intake continues.

One emergency-manager user subscribes `alert.subscribers` residents, issues an alert over the
tenant's whole service area, has it approved by a second manager and records its id; every
other user keeps filing and reading requests on the daily mix. Reconciliation then checks that
each subscriber received exactly one delivery.
NOTE: the alert endpoints follow the documented JSON API (`/api/v1/alerts`); adjust the paths
here if the alerts API names them differently.
"""

from __future__ import annotations

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
        self.sent = False

    def _headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    @task
    def storm(self) -> None:
        if self.sent:
            return
        self.sent = True
        manager = self._headers(self.alert["manager_key"])
        for index in range(int(self.alert["subscribers"])):
            lat, lon = self.tenant["points"][index % len(self.tenant["points"])]
            self.client.post(
                "/api/v1/alerts/subscribers",
                json={
                    "channel": "webhook",
                    "address": f"{self.alert['sink_url']}/{index}",
                    "languages": ["en"],
                    "places": [{"lat": lat, "lon": lon}],
                    "consent": True,
                },
                headers=manager,
                name="POST /api/v1/alerts/subscribers",
            )
        response = self.client.post(
            "/api/v1/alerts",
            json=self.alert["body"],
            headers=manager,
            name="POST /api/v1/alerts",
        )
        if response.status_code not in (200, 201):
            return
        alert_id = response.json().get("id")
        self.client.post(
            f"/api/v1/alerts/{alert_id}/approve",
            headers=self._headers(self.alert["approver_key"]),
            name="POST /api/v1/alerts/{id}/approve",
        )
        records().ack({"tenant_id": self.tenant["tenant_id"], "alert_id": alert_id})
