"""Helpers for the alert tests: tenants with alert settings, residents, local receivers.

Every receiver listens on 127.0.0.1 on a free port and records what it received, keyed by the
delivery key, so a repeated delivery shows up as a repeat and not as a second resident.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from open311_support import northeast_manifest
from sqlalchemy import Engine, select

from hub.alerts import fanout
from hub.alerts import models as m
from hub.alerts.cap.model import Alert, Area, Info
from hub.alerts.subscriptions import SubscriptionInput, subscribe
from hub.core.db import unit_of_work
from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, SystemContext, TenantContext
from privacy.fields import FieldCipher
from privacy.keys import create_tenant_keys
from tenants.models import Tenant

# Two boxes: "west" around lower Manhattan, "east" around Boston, and one polygon over both.
NYC_POINT = (40.7128, -74.0060)
BOSTON_POINT = (42.3601, -71.0589)
OUTSIDE_POINT = (39.9526, -75.1652)  # Philadelphia
BOTH_CITIES = [
    (40.5, -74.3),
    (40.5, -70.8),
    (42.6, -70.8),
    (42.6, -74.3),
    (40.5, -74.3),
]


def add_tenant(
    engine: Engine,
    *,
    region: str | None = "northeast",
    alerts: dict[str, Any] | None = None,
    default_language: str = "en",
) -> str:
    tenant_id = f"t{uuid.uuid4().hex[:10]}"
    with unit_of_work(SystemContext("test setup"), engine=engine) as session:
        session.add(
            Tenant(
                id=tenant_id,
                jurisdiction_id=f"{tenant_id}.example.org",
                name=f"Test city {tenant_id}",
                timezone="America/New_York",
                languages=["en", "es"],
                default_language=default_language,
                region=region,
                manifest=northeast_manifest(tenant_id, region=region, alerts=alerts),
            )
        )
        session.flush()
        create_tenant_keys(session, tenant_id)
    return tenant_id


def register_managers(engine: Engine, tenant_id: str, *names: str) -> None:
    """Create an emergency_manager key held by each name, so `--as NAME` is accepted."""
    from tenants.keys import create_api_key

    admin = TenantContext(tenant_id, actor="cli:admin")
    with unit_of_work(admin, engine=engine) as session:
        for name in names:
            create_api_key(
                session, admin, roles=[ROLE_EMERGENCY_MANAGER], label=f"OEM {name}", holder=name
            )


def manager(tenant_id: str, name: str = "em1") -> TenantContext:
    return TenantContext(tenant_id, actor=f"cli:{name}", roles=frozenset({ROLE_EMERGENCY_MANAGER}))


def add_residents(
    engine: Engine,
    tenant_id: str,
    residents: list[tuple[tuple[float, float], dict[str, str], list[str]]],
) -> list[str]:
    """Subscribe many residents in one transaction: (place, channels, languages) each."""
    ctx = TenantContext(tenant_id, actor="test")
    ids = []
    with unit_of_work(ctx, engine=engine) as session:
        cipher = FieldCipher.for_tenant(session, tenant_id)
        for place, channels, languages in residents:
            subscriber_id, _token = subscribe(
                session,
                ctx,
                SubscriptionInput(
                    places=[place],
                    languages=languages,
                    channels=channels,
                    consent_at=datetime.now(UTC),
                ),
                cipher=cipher,
            )
            ids.append(subscriber_id)
    return ids


def add_resident(
    engine: Engine,
    tenant_id: str,
    place: tuple[float, float],
    channels: dict[str, str],
    *,
    languages: list[str] | None = None,
    test_opt_in: bool = False,
) -> str:
    with unit_of_work(TenantContext(tenant_id, actor="test"), engine=engine) as session:
        subscriber_id, _token = subscribe(
            session,
            TenantContext(tenant_id, actor="test"),
            SubscriptionInput(
                places=[place],
                languages=languages or ["en"],
                channels=channels,
                consent_at=datetime.now(UTC),
                test_opt_in=test_opt_in,
            ),
        )
    return subscriber_id


def cap_alert(
    identifier: str,
    *,
    ring: list[tuple[float, float]] | None = None,
    status: str = "Actual",
    msg_type: str = "Alert",
    references: str | None = None,
    urgency: str = "Expected",
    severity: str = "Severe",
    expires_in: timedelta = timedelta(hours=6),
    with_info: bool = True,
) -> Alert:
    sent = datetime.now(UTC).replace(microsecond=0)
    infos = []
    if with_info:
        for language, headline in (("en-US", "Hurricane warning"), ("es-US", "Aviso de huracán")):
            infos.append(
                Info(
                    language=language,
                    categories=["Met"],
                    event="Hurricane",
                    urgency=urgency,
                    severity=severity,
                    certainty="Likely",
                    expires=sent + expires_in,
                    headline=headline,
                    description=f"{headline}: description",
                    instruction=f"{headline}: instruction",
                    areas=[Area(area_desc="Coast", polygons=[ring or BOTH_CITIES])],
                )
            )
    return Alert(
        identifier=identifier,
        sender="em@region.example.org",
        sent=sent,
        status=status,
        msg_type=msg_type,
        scope="Public",
        references=references,
        infos=infos,
    )


def run_batches(engine: Engine, tenant_id: str, alert_id: str) -> None:
    """Run every delivery batch of an alert through the task body, in this process."""
    with unit_of_work(manager(tenant_id), engine=engine) as session:
        batches = sorted(
            set(session.scalars(select(m.Delivery.batch).where(m.Delivery.alert_id == alert_id)))
        )
    for batch in batches:
        fanout.deliver_batch(alert_id, batch, tenant_id, engine=engine)


def backdate_expiry(engine: Engine, tenant_id: str, alert_id: str) -> None:
    """Move an alert's `expires` one hour into the past, as if it expired before sending.

    Compose rejects an alert that has already expired, so tests compose first, then expire it.
    """
    from hub.alerts import service

    with unit_of_work(manager(tenant_id), engine=engine) as session:
        row = service.get_alert(session, alert_id)
        row.expires_at = datetime.now(UTC) - timedelta(hours=1)


@dataclass
class Received:
    keys: Counter[str] = field(default_factory=Counter)
    bodies: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, body: Any) -> None:
        with self.lock:
            self.keys[key] += 1
            self.bodies[key] = body


class HttpReceiver:
    """An aiohttp server on 127.0.0.1 that returns `status` (default 200) and `headers` to
    every POST."""

    def __init__(
        self,
        status: int = 200,
        key_header: str = "X-Hub-Delivery-Id",
        delay: float = 0.0,
        headers: dict[str, str] | None = None,
    ):
        self.status = status
        self.headers = headers or {}
        self.delay = delay
        self.key_header = key_header
        self.received = Received()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        key = request.headers.get(self.key_header) or f"anon-{uuid.uuid4().hex}"
        if request.content_type == "application/json":
            parsed: Any = json.loads(body)
            key = parsed.get("reference", key) if isinstance(parsed, dict) else key
        else:
            parsed = body
        entry = {
            "body": parsed,
            "raw": body,
            "path": request.path,
            "headers": dict(request.headers),
        }
        self.received.add(key, entry)
        return web.Response(status=self.status, headers=self.headers)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> HttpReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class _SmtpHandler:
    def __init__(self) -> None:
        self.received = Received()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        from email import message_from_bytes, policy

        message = message_from_bytes(envelope.content, policy=policy.default)
        self.received.add(
            message["Message-ID"],
            {
                "to": envelope.rcpt_tos,
                "subject": message["Subject"],
                "language": message["Content-Language"],
            },
        )
        return "250 OK"


class SmtpReceiver:
    """An aiosmtpd server on 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.handler = _SmtpHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def received(self) -> Received:
        return self.handler.received

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def table_rows(output: str) -> list[dict[str, str]]:
    """Read the rows of a table a command printed, as {column: cell text}.

    A long cell folds onto the next lines of the table, whose first column is empty. Their
    text is joined to the cell with a space, so a test can match a cell at any table width.
    """
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    columns = [name.strip() for name in header.strip("┃").split("┃")]
    rows: list[dict[str, list[str]]] = []
    for line in lines:
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0] or not rows:
            rows.append({column: [] for column in columns})
        for column, cell in zip(columns, cells, strict=True):
            if cell:
                rows[-1][column].append(cell)
    return [{column: " ".join(parts) for column, parts in row.items()} for row in rows]


def push_subscription(endpoint: str) -> tuple[str, ec.EllipticCurvePrivateKey, bytes]:
    """Return a browser's PushSubscription JSON for `endpoint`, with its private key and
    auth secret to decrypt what is pushed."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth = os.urandom(16)
    encode = lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")  # noqa: E731
    subscription = {"endpoint": endpoint, "keys": {"p256dh": encode(public), "auth": encode(auth)}}
    return json.dumps(subscription), private, auth
