"""What an after-action review reads about an alert: metrics from the database, error
reasons of dropped deliveries, audit entries per tenant and message, subscriber counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from alerts_support import (
    BOSTON_POINT,
    NYC_POINT,
    HttpReceiver,
    add_resident,
    add_tenant,
    cap_alert,
    manager,
    register_managers,
    run_batches,
)
from sqlalchemy import Engine, select

from hub.alerts import fanout, workflow
from hub.alerts import models as m
from hub.alerts.channels import Outcome
from hub.alerts.fanout import Tally
from hub.api.observability import ALERT_DELIVERIES, ALERTS_SENT, alert_totals_reader
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext
from privacy.audit_verify import verify_database
from privacy.models import AuditEntry

# The receivers listen on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")


def compose_approved(engine: Engine, tenant_id: str, cap, also=None) -> list[dict]:
    """Compose as em1 and approve as em2 in every participating tenant."""
    rows = workflow.compose(engine, manager(tenant_id), cap, tenants=also)
    for row in rows:
        workflow.approve(engine, manager(row["tenant_id"], "em2"), row["id"])
    return rows


def reference(cap) -> str:
    return f"{cap.sender},{cap.identifier},{cap.sent.isoformat()}"


def test_cli_send_counted_at_scrape(engine: Engine, webhook_receiver: HttpReceiver) -> None:
    tenant = add_tenant(engine)
    register_managers(engine, tenant, "em1")
    add_resident(engine, tenant, NYC_POINT, {"webhook": webhook_receiver.url("/a")})
    add_resident(engine, tenant, NYC_POINT, {"email": "resident@example.org"})
    [row] = compose_approved(engine, tenant, cap_alert("AAR-CLI-1"))
    environment = {
        **os.environ,
        "HUB_DATABASE_URL": engine.url.render_as_string(hide_password=False),
    }

    # A process of its own, like an emergency manager's `hub alerts send`, which exits
    # before Prometheus scrapes the API.
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "alerts", "send", row["id"]]
        + ["--tenant", tenant, "--as", "em1", "--json"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["deliveries"] == 2

    samples = alert_totals_reader(engine)()
    sent = {labels: value for labels, value in samples[ALERTS_SENT.name] if labels[0] == tenant}
    deliveries = {
        labels: value for labels, value in samples[ALERT_DELIVERIES.name] if labels[0] == tenant
    }
    assert sent == {(tenant, "alert", "Actual", "Alert"): 1.0}
    assert deliveries == {
        (tenant, "webhook", m.PENDING): 1.0,
        (tenant, "email", m.PENDING): 1.0,
    }


def test_delivery_totals_follow_states(engine: Engine, webhook_receiver: HttpReceiver) -> None:
    tenant = add_tenant(engine)
    add_resident(engine, tenant, NYC_POINT, {"webhook": webhook_receiver.url("/b")})
    [row] = compose_approved(engine, tenant, cap_alert("AAR-STATES-1"))
    workflow.send(engine, manager(tenant), row["id"])
    run_batches(engine, tenant, row["id"])

    samples = alert_totals_reader(engine)()

    deliveries = {
        labels: value for labels, value in samples[ALERT_DELIVERIES.name] if labels[0] == tenant
    }
    assert deliveries == {(tenant, "webhook", m.DELIVERED): 1.0}


@pytest.mark.parametrize("msg_type", ["Update", "Cancel"])
def test_dropped_deliveries_keep_error(engine: Engine, cli, msg_type: str) -> None:
    failing = HttpReceiver(status=503).start()
    try:
        tenant = add_tenant(engine)
        add_resident(engine, tenant, NYC_POINT, {"webhook": failing.url("/busy")})
        first = cap_alert(f"AAR-DROP-{msg_type}")
        [row] = compose_approved(engine, tenant, first)
        workflow.send(engine, manager(tenant), row["id"])
        run_batches(engine, tenant, row["id"])  # fails, stays pending for a retry
    finally:
        failing.stop()
    follow_up = cap_alert(
        f"AAR-DROP-{msg_type}-2",
        msg_type=msg_type,
        references=reference(first),
        with_info=msg_type == "Update",
    )
    [second] = compose_approved(engine, tenant, follow_up)
    workflow.send(engine, manager(tenant), second["id"])

    [status] = workflow.status(engine, manager(tenant), row["id"])

    assert status["deliveries"] == {"webhook": {m.DROPPED: 1}}
    assert status["errors"] == {"webhook": {"HTTP 503": 1}}
    expected_reason = m.SUPERSEDED if msg_type == "Update" else m.CANCELLED
    assert status["drop_reasons"] == {"webhook": {expected_reason: 1}}
    shown = cli("status", row["id"], "--tenant", tenant)
    assert shown.exit_code == 0, shown.output
    assert f"1 ({expected_reason} 1)" in shown.output
    assert "HTTP 503 (1)" in shown.output


def test_dropped_then_sent_clears_reasons(engine: Engine, webhook_receiver) -> None:
    tenant = add_tenant(engine)
    add_resident(engine, tenant, NYC_POINT, {"webhook": webhook_receiver.url("/c")})
    [row] = compose_approved(engine, tenant, cap_alert("AAR-CLEAR-1"))
    workflow.send(engine, manager(tenant), row["id"])
    with unit_of_work(manager(tenant), engine=engine) as session:
        delivery = session.scalar(select(m.Delivery).where(m.Delivery.alert_id == row["id"]))
        # As if a chunk on the wire when the alert was cancelled is recorded afterwards.
        delivery.state, delivery.drop_reason, delivery.last_error = m.DROPPED, "x", "timed out"
        session.flush()
        job = fanout.Job(delivery.id, "webhook", delivery.channel_row_id, "", None, "k", None)
        results = [(job, Outcome(ok=True))]
        fanout._store_sent(session, row["id"], delivery.batch, [delivery.id], results, Tally())

    [status] = workflow.status(engine, manager(tenant), row["id"])

    assert status["deliveries"] == {"webhook": {m.DELIVERED: 1}}
    assert status["errors"] == {}
    assert status["drop_reasons"] == {}


def test_regional_audit_names_own_alert(engine: Engine) -> None:
    nyc = add_tenant(engine)
    boston = add_tenant(engine)
    add_resident(engine, boston, BOSTON_POINT, {"email": "vecina@example.org"})
    cap = cap_alert("AAR-AUDIT-1")
    rows = compose_approved(engine, nyc, cap, also=[boston])
    workflow.send(engine, manager(nyc), rows[0]["id"])
    [boston_row] = [r for r in rows if r["tenant_id"] == boston]
    assert boston_row["id"] != boston_row["group_id"]

    with unit_of_work(SystemContext("test"), engine=engine, write=False) as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == boston, AuditEntry.action.like("alert.%"))
            .order_by(AuditEntry.seq)
        ).all()
        actions = [entry.action for entry in entries]
        details = [entry.details for entry in entries]
        verified = verify_database(session, tenant_id=boston)

    assert actions == ["alert.compose", "alert.approve", "alert.send"]
    for detail in details:
        assert detail["alert_id"] == boston_row["id"]
        assert detail["group_id"] == boston_row["group_id"]
        assert detail["identifier"] == "AAR-AUDIT-1"
        assert detail["msg_type"] == "Alert"
        assert detail["status"] == "Actual"
    assert verified.ok, verified


def test_subscriber_counts_command(engine: Engine, cli, webhook_receiver) -> None:
    nyc = add_tenant(engine)
    boston = add_tenant(engine)
    add_resident(
        engine, nyc, NYC_POINT, {"webhook": webhook_receiver.url("/d"), "sms": "+12125550100"}
    )
    add_resident(engine, nyc, NYC_POINT, {"email": "vecina@example.org"}, languages=["es-mx"])
    add_resident(engine, nyc, NYC_POINT, {"email": "otra@example.org"}, test_opt_in=True)
    add_resident(engine, boston, BOSTON_POINT, {"email": "resident@example.org"})
    gone = add_resident(engine, nyc, NYC_POINT, {"sms": "+12125550199"}, languages=["fr"])
    with unit_of_work(manager(nyc), engine=engine) as session:
        session.get(m.Subscriber, gone).active = False

    result = cli("subscribers", "counts", "--tenant", nyc, "--json")
    text = cli("subscribers", "counts", "--tenant", nyc)

    assert result.exit_code == 0, result.output
    [counts] = json.loads(result.output)
    assert counts == {
        "tenant_id": nyc,
        "subscribers": 3,
        "test_opt_in": 1,
        "by_language": {"en": 2, "es-MX": 1},
        "by_channel": {"email": 2, "sms": 1, "webhook": 1},
    }
    assert text.exit_code == 0, text.output
    assert "es-MX" in text.output
    assert "example.org" not in result.output + text.output
    assert "+1212" not in result.output + text.output


def test_subscriber_counts_every_tenant(engine: Engine, cli) -> None:
    tenant = add_tenant(engine)

    result = cli("subscribers", "counts", "--json")

    assert result.exit_code == 0, result.output
    by_tenant = {row["tenant_id"]: row for row in json.loads(result.output)}
    assert by_tenant[tenant]["subscribers"] == 0
    assert by_tenant[tenant]["by_channel"] == {}


def test_subscriber_counts_unknown_tenant(engine: Engine, cli) -> None:
    result = cli("subscribers", "counts", "--tenant", "no-such-city")

    assert result.exit_code != 0
    assert "tenant no-such-city not found" in result.output
    assert "hub tenants list" in result.output
