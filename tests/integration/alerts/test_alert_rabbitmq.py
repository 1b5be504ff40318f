"""End to end on PostgreSQL and RabbitMQ: `hub worker` processes deliver a regional alert to
local SMTP, webhook, Web Push and SMS receivers, survive a SIGKILL mid-fan-out, then carry an
Update and a Cancel. Bounded: every wait has a deadline and the whole test takes well under
two minutes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import http_ece
import pytest
from alerts_support import (
    BOSTON_POINT,
    NYC_POINT,
    OUTSIDE_POINT,
    HttpReceiver,
    SmtpReceiver,
    add_resident,
    add_residents,
    add_tenant,
    cap_alert,
    manager,
    push_subscription,
)
from sqlalchemy import func, select

from hub.alerts import models as m
from hub.alerts import workflow
from hub.core.db import get_engine, unit_of_work

# The receivers listen on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")

WEBHOOK_RESIDENTS = 300
DEADLINE_SECONDS = 90


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def _wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


class Worker:
    def __init__(self, env: dict[str, str], log: Path):
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "hub.cli.main", "worker", "--pool", "threads"]
        command += ["--concurrency", "2", "--no-schedule"]
        handle = self.log.open("ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=handle, stderr=handle)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def stack(pg_url: str, rabbitmq_url: str, tmp_path: Path):
    if not shutil.which("rabbitmqctl"):
        pytest.skip("rabbitmqctl is needed to give the test its own virtual host")
    vhost = f"hub_alerts_{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    env = {
        **os.environ,
        "HUB_DATABASE_URL": pg_url,
        "HUB_BROKER_URL": rabbitmq_url.rstrip("/") + f"/{vhost}",
    }
    worker = Worker(env, tmp_path / "worker.log")
    try:
        yield get_engine(pg_url), worker
    finally:
        worker.stop()
        _rabbitmqctl("delete_vhost", vhost)


def _pending(engine, tenant_id: str, alert_id: str) -> int:
    with unit_of_work(manager(tenant_id), engine=engine) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(m.Delivery)
                .where(m.Delivery.alert_id == alert_id, m.Delivery.state == m.PENDING)
            )
        )


def test_fanout_survives_sigkill(stack, tmp_path: Path) -> None:
    engine, worker = stack
    webhook = HttpReceiver(delay=0.01).start()
    push = HttpReceiver(status=201, key_header="Topic").start()
    sms = HttpReceiver().start()
    smtp = SmtpReceiver().start()
    try:
        providers = {
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "sender": "alerts@test"},
            "sms": {"url": sms.url("/sms")},
            "webpush": {"subject": "mailto:oem@example.org"},
        }
        # 60 webhook deliveries a second stretch the fan-out over about five seconds, so the
        # kill lands mid-fan-out even on a busy machine.
        alerts = {"providers": providers, "rate_limits": {"webhook": 60, "email": 500}}
        nyc = add_tenant(engine, alerts=alerts)
        boston = add_tenant(engine, alerts=alerts, default_language="es")

        add_residents(
            engine,
            nyc,
            [
                (NYC_POINT, {"webhook": webhook.url(f"/r{n}")}, ["es"] if n % 3 == 0 else ["en"])
                for n in range(WEBHOOK_RESIDENTS)
            ],
        )
        add_resident(
            engine, boston, BOSTON_POINT, {"email": "vecino@example.org"}, languages=["es"]
        )
        add_resident(engine, boston, BOSTON_POINT, {"sms": "+16175550123"}, languages=["en"])
        subscription, push_key, push_auth = push_subscription(push.url("/push/abc"))
        add_resident(engine, nyc, NYC_POINT, {"webpush": subscription}, languages=["es-MX"])
        add_resident(engine, nyc, OUTSIDE_POINT, {"webhook": webhook.url("/outside")})
        expected = WEBHOOK_RESIDENTS + 3

        first = cap_alert("RMQ-1")
        rows = workflow.compose(engine, manager(nyc), first, tenants=[boston])
        by_tenant = {r["tenant_id"]: r["id"] for r in rows}
        workflow.approve(engine, manager(nyc, "em2"), by_tenant[nyc])
        workflow.approve(engine, manager(boston, "em2"), by_tenant[boston])
        assert workflow.send(engine, manager(nyc), by_tenant[nyc])["deliveries"] == expected

        worker.start()
        _wait_for(lambda: len(webhook.received.keys) >= 50, 60, "the first webhook deliveries")
        worker.kill()
        reached_before_kill = len(webhook.received.keys)
        assert reached_before_kill < WEBHOOK_RESIDENTS

        worker.start()
        _wait_for(
            lambda: (
                _pending(engine, nyc, by_tenant[nyc]) == 0
                and _pending(engine, boston, by_tenant[boston]) == 0
            ),
            DEADLINE_SECONDS,
            "every delivery",
        )

        # Every targeted resident received the alert; repeats carry the same delivery key.
        assert len(webhook.received.keys) == WEBHOOK_RESIDENTS
        assert "/outside" not in {e["path"] for e in webhook.received.bodies.values()}
        repeats = sum(webhook.received.keys.values()) - WEBHOOK_RESIDENTS
        assert repeats <= 400  # at most the two chunks in flight at the kill
        languages = {e["body"]["language"] for e in webhook.received.bodies.values()}
        assert languages == {"en-US", "es-US"}

        [email] = smtp.received.bodies.values()
        assert email["language"] == "es-US"
        [text] = sms.received.bodies.values()
        assert text["body"]["text"].startswith("Hurricane warning")
        [pushed] = push.received.bodies.values()
        decrypted = json.loads(
            http_ece.decrypt(
                pushed["body"], private_key=push_key, auth_secret=push_auth, version="aes128gcm"
            )
        )
        assert decrypted["language"] == "es-US"

        # The Update reaches the same recipients once each, and the Cancel reaches those reached.
        update = cap_alert(
            "RMQ-1-U",
            msg_type="Update",
            references=f"{first.sender},{first.identifier},{first.sent.isoformat()}",
        )
        update_rows = workflow.compose(engine, manager(nyc), update, tenants=[boston])
        update_ids = {r["tenant_id"]: r["id"] for r in update_rows}
        workflow.approve(engine, manager(nyc, "em2"), update_ids[nyc])
        workflow.approve(engine, manager(boston, "em2"), update_ids[boston])
        assert workflow.send(engine, manager(nyc), update_ids[nyc])["deliveries"] == expected
        _wait_for(
            lambda: _pending(engine, nyc, update_ids[nyc]) == 0, DEADLINE_SECONDS, "the update"
        )
        update_keys = [k for k in webhook.received.keys if k.startswith(update_ids[nyc])]
        assert len(update_keys) == WEBHOOK_RESIDENTS

        replay = workflow.send(engine, manager(nyc), update_ids[nyc])
        assert replay["already_sent"] is True

        cancel = cap_alert(
            "RMQ-1-C",
            msg_type="Cancel",
            references=f"{update.sender},{update.identifier},{update.sent.isoformat()}",
            with_info=False,
        )
        cancel_rows = workflow.compose(engine, manager(nyc), cancel, tenants=[boston])
        cancel_ids = {r["tenant_id"]: r["id"] for r in cancel_rows}
        workflow.approve(engine, manager(nyc, "em2"), cancel_ids[nyc])
        workflow.approve(engine, manager(boston, "em2"), cancel_ids[boston])
        assert workflow.send(engine, manager(nyc), cancel_ids[nyc])["deliveries"] == expected
        _wait_for(
            lambda: _pending(engine, nyc, cancel_ids[nyc]) == 0, DEADLINE_SECONDS, "the cancel"
        )
        cancel_bodies = [
            e["body"] for k, e in webhook.received.bodies.items() if k.startswith(cancel_ids[nyc])
        ]
        assert len(cancel_bodies) == WEBHOOK_RESIDENTS
        headlines = {b["headline"] for b in cancel_bodies}
        assert headlines == {"Cancelled: Hurricane warning", "Alerta cancelada: Aviso de huracán"}
    finally:
        webhook.stop()
        push.stop()
        sms.stop()
        smtp.stop()
