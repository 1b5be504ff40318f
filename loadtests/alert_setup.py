"""Setup and reconciliation of the `alert-storm` scenario.

The harness gives the emergency-manager user a CAP document and one loopback webhook address
per resident to subscribe. The alert has status Test, so it reaches only residents who opted in
to test messages, and its area is the bounding box of the tenant's load points. Each address is
a path on the harness's receiver, registered with the tenant's alert webhook secret, so the
receiver accepts the signed deliveries and counts a repeated delivery id as a duplicate.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

# Residents subscribed per load user, and the floor for small runs.
SUBSCRIBERS_PER_USER = 50
MIN_SUBSCRIBERS = 100


def bounding_ring(points: list[list[float]]) -> list[tuple[float, float]]:
    """Return a closed (lat, lon) ring around `points`, a little larger than their box."""
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    south, north = min(lats) - 0.001, max(lats) + 0.001
    west, east = min(lons) - 0.001, max(lons) + 0.001
    return [(south, west), (south, east), (north, east), (north, west), (south, west)]


def alert_document(points: list[list[float]]) -> dict[str, Any]:
    """Build the JSON form of a CAP Test alert over the points' area, in English and Spanish."""
    from hub.alerts.cap.mapping import to_dict
    from hub.alerts.cap.model import Alert, Area, Info

    sent = datetime.now(UTC).replace(microsecond=0)
    ring = bounding_ring(points)
    infos = [
        Info(
            language=language,
            categories=["Safety"],
            event="Load test",
            urgency="Expected",
            severity="Minor",
            certainty="Observed",
            expires=sent + timedelta(hours=1),
            headline=headline,
            description=headline,
            areas=[Area(area_desc="Load test area", polygons=[ring])],
        )
        for language, headline in (
            ("en-US", "Load test message; no action needed"),
            ("es-US", "Mensaje de prueba de carga; no se requiere ninguna acción"),
        )
    ]
    alert = Alert(
        identifier=f"LOADTEST-{uuid.uuid4().hex[:12]}",
        sender="loadtest@hub.invalid",
        sent=sent,
        status="Test",
        msg_type="Alert",
        scope="Public",
        infos=infos,
    )
    return to_dict(alert)


def alert_config(
    tenant: dict[str, Any], receiver: Any, users: int, manager_keys: list[str]
) -> dict[str, Any]:
    """Return the `alert` section of the run configuration and register the webhook paths."""
    from hub.alerts.channels import webhook_secret

    secret = webhook_secret(tenant["tenant_id"])
    count = max(users * SUBSCRIBERS_PER_USER, MIN_SUBSCRIBERS)
    urls = []
    for index in range(count):
        owner = f"alerts-{tenant['tenant_id']}"
        receiver.secrets[receiver.path_for(owner, str(index))] = secret
        urls.append(receiver.url_for(owner, str(index)))
    return {
        "tenant_id": tenant["tenant_id"],
        "manager_key": manager_keys[0],
        "approver_key": manager_keys[1],
        "subscriber_urls": urls,
        "document": alert_document(tenant["points"]),
    }


def wait_for_deliveries(engine: Engine, alert_ids: list[str], timeout: float = 60.0) -> int:
    """Wait until no delivery of the alerts is pending; return how many still are at timeout."""
    from hub.alerts.models import PENDING, Delivery
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext

    deadline = time.monotonic() + timeout
    pending = 0
    while True:
        with unit_of_work(SystemContext("load test drain"), engine=engine, write=False) as session:
            pending = int(
                session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.alert_id.in_(alert_ids), Delivery.state == PENDING)
                )
                or 0
            )
        if pending == 0 or time.monotonic() > deadline:
            return pending
        time.sleep(1.0)
