"""The alerts step of `hub demo`: a regional hurricane alert over New York City and Boston.

It subscribes generated residents in both cities (a third prefer Spanish) and points the two
tenants' SMS, Web Push and e-mail providers at local receivers on 127.0.0.1. It registers two
emergency managers per city. Then it composes an alert in English and Spanish, has the second
emergency manager approve it and sends it, follows it with an Update and a Cancel, and
reports deliveries per alert, tenant and channel.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

from sqlalchemy import func, select

from hub.alerts import models as m
from hub.alerts import workflow
from hub.alerts.cap.model import Alert, Area, Info
from hub.alerts.subscriptions import SubscriptionInput, subscribe
from hub.cli.demo.context import DemoContext
from hub.cli.demo.receiver import LoopbackHTTPServer
from hub.cli.output import table
from hub.core.db import unit_of_work
from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, SystemContext, TenantContext
from hub.requests.catalog import in_service_area
from privacy.fields import FieldCipher
from tenants.keys import create_api_key
from tenants.models import Tenant
from tenants.registry import TenantInfo, get_tenant

RESIDENTS_PER_CITY = 60
CITIES = {
    "new-york-city": ((40.58, 40.88), (-74.05, -73.80)),
    "boston": ((42.30, 42.40), (-71.12, -71.00)),
}
# One polygon over both cities and the coast between them.
REGION_POLYGON = [(40.5, -74.3), (40.5, -70.8), (42.6, -70.8), (42.6, -74.3), (40.5, -74.3)]
CHANNEL_CYCLE = ("webhook", "webhook", "sms", "webpush", "email")
# Each city's emergency managers: em1 composes and sends, em2 approves.
MANAGERS = ("em1", "em2")


class _Receiver:
    """Loopback HTTP receiver for webhook, SMS and Web Push, counting unique delivery keys."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                key = self.headers.get("X-Hub-Delivery-Id") or self.headers.get("Topic") or ""
                if not key and self.path.startswith("/sms"):
                    key = json.loads(body).get("reference", "")
                with receiver._lock:
                    receiver.keys[key] += 1
                self.send_response(201 if self.path.startswith("/push") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _start_smtp() -> tuple[Any, int] | None:
    """Start a loopback SMTP server when aiosmtpd is installed (it is a test dependency)."""
    try:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Sink
    except ImportError:
        return None
    from hub.cli.demo.pipeline import free_port

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port


def _push_subscription(endpoint: str) -> str:
    import base64
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )

    def encode(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    keys = {"p256dh": encode(public), "auth": encode(os.urandom(16))}
    return json.dumps({"endpoint": endpoint, "keys": keys})


def _configure_providers(ctx: DemoContext, receiver: _Receiver, smtp_port: int | None) -> None:
    providers: dict[str, Any] = {
        "sms": {"url": receiver.url("/sms")},
        "webpush": {"subject": "mailto:oem@example.org"},
    }
    if smtp_port is not None:
        providers["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "sender": "alerts@demo"}
    with unit_of_work(SystemContext("demo alert providers"), engine=ctx.engine) as session:
        for tenant_id in CITIES:
            tenant = session.get(Tenant, tenant_id)
            manifest = dict(tenant.manifest or {})
            alerts = dict(manifest.get("alerts") or {})
            alerts["providers"] = providers
            manifest["alerts"] = alerts
            tenant.manifest = manifest


def _place_in(
    tenant: TenantInfo, lats: tuple[float, float], lons: tuple[float, float], rng: random.Random
) -> tuple[float, float]:
    """Return a random place of the box that is in the city's service area, not the sea."""
    while True:
        lat, lon = rng.uniform(*lats), rng.uniform(*lons)
        if in_service_area(tenant, lat, lon):
            return lat, lon


def _subscribe_residents(ctx: DemoContext, receiver: _Receiver, email: bool) -> int:
    rng = random.Random(ctx.options.seed)
    count = 0
    for tenant_id, (lats, lons) in CITIES.items():
        scope = TenantContext(tenant_id, actor="demo")
        tenant = get_tenant(tenant_id, engine=ctx.engine)
        assert tenant is not None, f"the demo onboarded {tenant_id}"
        with unit_of_work(scope, engine=ctx.engine) as session:
            cipher = FieldCipher.for_tenant(session, tenant_id)
            for number in range(RESIDENTS_PER_CITY):
                channel = CHANNEL_CYCLE[number % len(CHANNEL_CYCLE)]
                if channel == "email" and not email:
                    channel = "webhook"
                address = {
                    "webhook": receiver.url(f"/hook/{tenant_id}/{number}"),
                    "sms": f"+1617555{number:04d}",
                    "webpush": _push_subscription(receiver.url(f"/push/{tenant_id}/{number}")),
                    "email": f"resident{number}@{tenant_id}.example.org",
                }[channel]
                subscribe(
                    session,
                    scope,
                    SubscriptionInput(
                        places=[_place_in(tenant, lats, lons, rng)],
                        languages=["es", "en"] if number % 3 == 0 else ["en"],
                        channels={channel: address},
                        consent_at=datetime.now(UTC),
                        source="demo",
                    ),
                    cipher=cipher,
                )
                count += 1
    return count


def _alert(identifier: str, msg_type: str, references: str | None, sent: datetime) -> Alert:
    infos = []
    if msg_type != "Cancel":
        texts = {
            "en-US": ("Hurricane warning", "Move to higher ground and follow local orders."),
            "es-US": ("Aviso de huracán", "Diríjase a terreno elevado y siga las órdenes."),
        }
        if msg_type == "Update":
            texts = {
                "en-US": ("Hurricane warning extended", "Stay indoors until further notice."),
                "es-US": ("Aviso de huracán extendido", "Permanezca adentro hasta nuevo aviso."),
            }
        for language, (headline, instruction) in texts.items():
            infos.append(
                Info(
                    language=language,
                    categories=["Met"],
                    event="Hurricane",
                    response_types=["Shelter"],
                    urgency="Expected",
                    severity="Severe",
                    certainty="Likely",
                    expires=sent + timedelta(hours=12),
                    headline=headline,
                    instruction=instruction,
                    areas=[Area(area_desc="New York City to Boston", polygons=[REGION_POLYGON])],
                )
            )
    return Alert(
        identifier=identifier,
        sender="oem@nyc.example.org",
        sent=sent,
        status="Actual",
        msg_type=msg_type,
        scope="Public",
        references=references,
        infos=infos,
    )


def _register_managers(ctx: DemoContext) -> None:
    """Give each city the emergency managers em1 and em2, as keys with a holder, because
    alert actions by name are accepted only from a tenant's registered managers."""
    for tenant_id in CITIES:
        admin = TenantContext(tenant_id, actor="demo")
        with unit_of_work(admin, engine=ctx.engine) as session:
            for name in MANAGERS:
                create_api_key(
                    session,
                    admin,
                    roles=[ROLE_EMERGENCY_MANAGER],
                    label=f"demo emergency manager {name}",
                    holder=name,
                )


def _manager(ctx: DemoContext, tenant_id: str, name: str) -> TenantContext:
    return workflow.named_manager(ctx.engine, tenant_id, name)


def _pending(ctx: DemoContext, rows: list[dict[str, Any]]) -> int:
    total = 0
    for row in rows:
        scope = TenantContext(row["tenant_id"], actor="demo")
        with unit_of_work(scope, engine=ctx.engine, write=False) as session:
            total += int(
                session.scalar(
                    select(func.count())
                    .select_from(m.Delivery)
                    .where(m.Delivery.alert_id == row["id"], m.Delivery.state == m.PENDING)
                )
                or 0
            )
    return total


def _run_alert(ctx: DemoContext, cap: Alert) -> list[dict[str, Any]]:
    """Compose, approve in each tenant by a second manager, send, wait; return the status."""
    composer = _manager(ctx, "new-york-city", "em1")
    rows = workflow.compose(ctx.engine, composer, cap, tenants=["boston"])
    for row in rows:
        workflow.approve(ctx.engine, _manager(ctx, row["tenant_id"], "em2"), row["id"])
    origin = next(r for r in rows if r["tenant_id"] == "new-york-city")
    workflow.send(ctx.engine, composer, origin["id"])
    deadline = time.monotonic() + ctx.options.wait_seconds
    while _pending(ctx, rows) and time.monotonic() < deadline:
        time.sleep(0.5)
    return workflow.status(ctx.engine, composer, origin["id"])


def alerts_step(ctx: DemoContext) -> dict[str, Any]:
    receiver = _Receiver()
    smtp = _start_smtp()
    if smtp is not None:
        ctx.add_cleanup(smtp[0].stop)
    ctx.add_cleanup(receiver.server.shutdown)
    _configure_providers(ctx, receiver, smtp[1] if smtp else None)
    _register_managers(ctx)
    residents = _subscribe_residents(ctx, receiver, email=smtp is not None)

    sent = datetime.now(UTC).replace(microsecond=0)
    suffix = sent.strftime("%Y%m%d%H%M%S")
    first = _alert(f"DEMO-HU-{suffix}", "Alert", None, sent)
    reference = f"{first.sender},{first.identifier},{sent.isoformat()}"
    update = _alert(f"DEMO-HU-{suffix}-U", "Update", reference, sent + timedelta(seconds=1))
    update_reference = f"{update.sender},{update.identifier},{update.sent.isoformat()}"
    cancel = _alert(f"DEMO-HU-{suffix}-C", "Cancel", update_reference, sent + timedelta(seconds=2))

    alerts = []
    for label, cap in (("alert", first), ("update", update), ("cancel", cancel)):
        for row in _run_alert(ctx, cap):
            alerts.append({"message": label, **row})
    repeats = sum(receiver.keys.values()) - len(receiver.keys)
    return {"residents": residents, "alerts": alerts, "receiver_repeats": repeats}


def render_alerts(section: dict[str, Any]) -> None:
    rows = []
    for alert in section["alerts"]:
        for channel, counts in sorted(alert["deliveries"].items()):
            rows.append(
                [
                    alert["message"],
                    alert["tenant_id"],
                    alert["state"],
                    channel,
                    counts.get("sent", 0),
                    counts.get("pending", 0),
                    counts.get("failed", 0) + counts.get("dropped", 0),
                ]
            )
    table(
        f"regional alert to {section['residents']} residents (English and Spanish)",
        ["message", "tenant", "state", "channel", "sent", "pending", "failed/dropped"],
        rows,
    )
