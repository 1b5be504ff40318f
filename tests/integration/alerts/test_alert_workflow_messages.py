"""What emergency managers see: honest final states, error reasons, approval messages and
hints, unknown tenants, and times with offsets. Also the Cancel that lands while a chunk is
on the wire, and the HTTP session closed at worker shutdown."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
import structlog
from alerts_support import (
    NYC_POINT,
    HttpReceiver,
    add_resident,
    add_tenant,
    backdate_expiry,
    cap_alert,
    manager,
    register_managers,
)
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select
from test_alert_fanout import alert_row, approve, compose, run_batches, send

from hub.alerts import fanout, workflow
from hub.alerts import models as m
from hub.alerts.cap.problems import InvalidCap
from hub.core.db import unit_of_work
from hub.core.errors import Forbidden, NotFound

# The receivers listen on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")

RATES = {"rate_limits": {"webhook": 1000}}


def closed_port_url() -> str:
    """Return a URL on 127.0.0.1 where nothing listens, so connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/down"


def failed_counter() -> float:
    labels = {"channel": "webhook", "outcome": "failed"}
    return REGISTRY.get_sample_value("hub_alerts_delivery_attempts_total", labels) or 0.0


def send_until_final(engine: Engine, tenant: str, alert_id: str) -> None:
    """Run the alert's batches once per allowed attempt, as the retries would."""
    for _attempt in range(fanout.MAX_ATTEMPTS):
        run_batches(engine, tenant, alert_id)


def test_all_deliveries_failed_state(engine, cli) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    add_resident(engine, tenant, NYC_POINT, {"webhook": closed_port_url()})
    [row] = compose(engine, tenant, cap_alert("FAIL-1"))
    approve(engine, tenant, row.id, "em2")
    send(engine, [row])
    failed_before = failed_counter()

    with structlog.testing.capture_logs() as logs:
        send_until_final(engine, tenant, row.id)

    assert alert_row(engine, tenant, row.id).state == m.SEND_FAILED
    assert failed_counter() - failed_before == 1
    warnings = [e for e in logs if e["event"] == "alert_batch_delivery_failures"]
    assert len(warnings) == fanout.MAX_ATTEMPTS
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["retry"] == 1
    assert warnings[0]["errors"] == {"webhook: connection refused": 1}
    assert warnings[-1]["failed"] == 1

    text = cli("status", row.id, "--tenant", tenant)
    assert text.exit_code == 0, text.output
    assert "failed" in text.output
    assert "connection refused (1)" in text.output
    assert "residents were not reached" in text.output
    [status] = json.loads(cli("status", row.id, "--tenant", tenant, "--json").stdout)
    assert status["state"] == "failed"
    assert status["errors"] == {"webhook": {"connection refused": 1}}
    assert status["deliveries"] == {"webhook": {"failed": 1}}


def test_some_deliveries_failed_state(engine, webhook_receiver) -> None:
    unsubscribed = HttpReceiver(status=410).start()
    try:
        tenant = add_tenant(engine, alerts=RATES)
        add_resident(engine, tenant, NYC_POINT, {"webhook": webhook_receiver.url("/ok")})
        add_resident(engine, tenant, NYC_POINT, {"webhook": unsubscribed.url("/gone")})
        [row] = compose(engine, tenant, cap_alert("FAIL-2"))
        approve(engine, tenant, row.id, "em2")
        send(engine, [row])
        run_batches(engine, tenant, row.id)
    finally:
        unsubscribed.stop()
    assert alert_row(engine, tenant, row.id).state == m.PARTLY_FAILED
    [status] = workflow.status(engine, manager(tenant), row.id)
    assert status["errors"] == {"webhook": {"HTTP 410": 1}}


def test_retrying_delivery_shows_reason(engine) -> None:
    busy = HttpReceiver(status=503).start()
    try:
        tenant = add_tenant(engine, alerts=RATES)
        add_resident(engine, tenant, NYC_POINT, {"webhook": busy.url("/busy")})
        [row] = compose(engine, tenant, cap_alert("FAIL-3"))
        approve(engine, tenant, row.id, "em2")
        send(engine, [row])
        run_batches(engine, tenant, row.id)
    finally:
        busy.stop()
    [status] = workflow.status(engine, manager(tenant), row.id)
    assert status["state"] == m.SENDING
    assert status["errors"] == {"webhook": {"HTTP 503": 1}}


def test_send_hint_is_runnable_command(engine) -> None:
    tenant = add_tenant(engine)
    [row] = compose(engine, tenant, cap_alert("HINT-1"))
    with pytest.raises(Forbidden) as raised:
        send(engine, [row])
    assert f"`hub alerts approve {row.id} --tenant {tenant} --as NAME`" in raised.value.message


def test_unknown_alert_hint_names_tenant(engine) -> None:
    tenant = add_tenant(engine)
    with pytest.raises(NotFound) as raised:
        workflow.status(engine, manager(tenant), "NOPE")
    assert f"`hub alerts list --tenant {tenant}`" in raised.value.message


def test_composer_approval_explained(engine, cli) -> None:
    tenant = add_tenant(engine)
    register_managers(engine, tenant, "em1")
    [row] = compose(engine, tenant, cap_alert("SELF-1"))

    result = workflow.approve(engine, manager(tenant, "em1"), row.id)
    assert result["state"] == m.DRAFT
    assert result["approval"]["outcome"] == "awaiting_second_approver"
    assert "other than em1" in result["approval"]["message"]
    assert (
        f"`hub alerts approve {row.id} --tenant {tenant} --as NAME`"
        in (result["approval"]["message"])
    )

    again = cli("approve", row.id, "--tenant", tenant, "--as", "em1")
    assert again.exit_code == 0, again.output
    assert "recorded as the first approval" in again.output
    assert "second emergency manager other than em1" in again.output
    as_json = json.loads(cli("approve", row.id, "--tenant", tenant, "--as", "em1", "--json").stdout)
    assert as_json["approval"]["outcome"] == "awaiting_second_approver"


def test_regional_approval_per_tenant(engine) -> None:
    origin = add_tenant(engine)
    follower = add_tenant(engine, alerts={"approval": {"regional_requires_each_tenant": False}})
    own = add_tenant(engine)  # by default each tenant approves its own draft
    rows = compose(engine, origin, cap_alert("REG-1"), tenants=[follower, own])
    origin_row = next(r for r in rows if r.tenant_id == origin)

    result = workflow.approve(engine, manager(origin, "em2"), origin_row.id)

    outcomes = {state["tenant_id"]: state["outcome"] for state in result["tenants"]}
    assert outcomes == {
        origin: "approved",
        follower: "approved_by_origin",
        own: "awaiting_approval",
    }
    assert result["tenants"][0]["tenant_id"] == origin
    messages = {state["tenant_id"]: state["message"] for state in result["tenants"]}
    assert "regional_requires_each_tenant: false" in messages[follower]
    own_row = next(r for r in rows if r.tenant_id == own)
    assert f"hub alerts approve {own_row.id} --tenant {own} --as NAME" in messages[own]


def test_expired_alert_rejected_at_compose(engine) -> None:
    tenant = add_tenant(engine)
    with pytest.raises(InvalidCap) as raised:
        compose(engine, tenant, cap_alert("OLD-1", expires_in=timedelta(seconds=-60)))
    paths = [problem.path for problem in raised.value.problems]
    assert paths == ["alert/info[1]/expires", "alert/info[2]/expires"]
    assert "has passed" in raised.value.problems[0].message


def test_expired_send_repeats_error(engine, cli) -> None:
    tenant = add_tenant(engine)
    register_managers(engine, tenant, "em1")
    [row] = compose(engine, tenant, cap_alert("OLD-2"))
    approve(engine, tenant, row.id, "em2")
    backdate_expiry(engine, tenant, row.id)

    for attempt in (1, 2, 3):
        result = cli("send", row.id, "--tenant", tenant, "--as", "em1")
        assert result.exit_code == 2, (attempt, result.output)
        assert f"alert {row.id} expired at" in result.output, attempt
        assert "nothing was sent" in result.output, attempt
        assert "already sent" not in result.output, attempt

    as_json = cli("send", row.id, "--tenant", tenant, "--as", "em1", "--json")
    assert as_json.exit_code == 2
    document = json.loads(as_json.stdout)
    assert "expired at" in document["error"]
    assert "already_sent" not in document
    assert alert_row(engine, tenant, row.id).state == m.EXPIRED


def test_unknown_tenant_reported(engine, cli, tmp_path) -> None:
    path = tmp_path / "alert.yaml"
    path.write_text(
        "identifier: UNK-1\nsender: em@region.example.org\nstatus: Actual\nmsgType: Alert\n"
        "scope: Public\ninfo:\n  - category: [Met]\n    event: Flood\n    urgency: Expected\n"
        "    severity: Severe\n    certainty: Likely\n    area:\n      - areaDesc: Coast\n"
        '        circle: ["40.7,-74.0 5"]\n',
        encoding="utf-8",
    )
    for args in (
        ("compose", str(path), "--tenant", "nowhere", "--as", "em1"),
        ("compose", str(path), "--tenant", "nowhere", "--also", "boston", "--as", "em1"),
        ("preview", "ANY", "--tenant", "nowhere"),
        ("status", "ANY", "--tenant", "nowhere"),
        ("list", "--tenant", "nowhere"),
    ):
        result = cli(*args)
        assert result.exit_code != 0, args
        assert "tenant nowhere not found" in result.output, args
        assert "Traceback" not in result.output


def test_compose_json_lists_problems(engine, cli, tmp_path) -> None:
    tenant = add_tenant(engine)
    register_managers(engine, tenant, "em1")
    path = tmp_path / "partial.yaml"
    path.write_text("identifier: PART-1\n", encoding="utf-8")

    result = cli("compose", str(path), "--tenant", tenant, "--as", "em1", "--json")

    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    assert document["error"].startswith(f"{path} is not a valid alert")
    assert document["file"] == str(path)
    paths = [problem["path"] for problem in document["problems"]]
    assert paths == ["alert/sender", "alert/status", "alert/msgType", "alert/scope"]
    assert "alert/sender: required element <sender> is missing" in result.stderr


def test_json_times_have_offset(engine, cli) -> None:
    tenant = add_tenant(engine)
    [row] = compose(engine, tenant, cap_alert("TIME-1"))
    listed = json.loads(cli("list", "--tenant", tenant, "--json").stdout)
    assert listed[0]["expires_at"].endswith("+00:00")
    [status] = json.loads(cli("status", row.id, "--tenant", tenant, "--json").stdout)
    assert status["expires_at"].endswith("+00:00")


def test_cancel_during_chunk_reaches_sent(engine, webhook_receiver, monkeypatch) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    for number in range(3):
        add_resident(engine, tenant, NYC_POINT, {"webhook": webhook_receiver.url(f"/r{number}")})
    first = cap_alert("RACE-1")
    [row] = compose(engine, tenant, first)
    approve(engine, tenant, row.id, "em2")
    send(engine, [row])

    # The Cancel commits after the chunk went out and before its outcomes are stored.
    reference = f"{first.sender},{first.identifier},{first.sent.isoformat()}"
    cancel_cap = cap_alert("RACE-1-C", msg_type="Cancel", references=reference, with_info=False)
    send_chunk = fanout._Sender._send_chunk
    cancels = []

    def cancel_now() -> None:
        [cancel] = compose(engine, tenant, cancel_cap)
        approve(engine, tenant, cancel.id, "em2")
        cancels.append(cancel)
        assert send(engine, [cancel]) == 0  # no resident is recorded as reached yet

    async def send_then_cancel(self, chunk, grants):
        outcomes = await send_chunk(self, chunk, grants)
        if not cancels:
            await fanout.asyncio.to_thread(cancel_now)
        return outcomes

    monkeypatch.setattr(fanout._Sender, "_send_chunk", send_then_cancel)
    fanout.deliver_batch(row.id, 0, tenant, engine=engine)

    with unit_of_work(manager(tenant), engine=engine) as session:
        states = set(session.scalars(select(m.Delivery.state).where(m.Delivery.alert_id == row.id)))
        cancel_rows = session.scalars(
            select(m.Delivery).where(m.Delivery.alert_id == cancels[0].id)
        ).all()
    assert states == {m.DELIVERED}
    assert len(cancel_rows) == 3
    assert alert_row(engine, tenant, cancels[0].id).state == m.SENDING

    run_batches(engine, tenant, cancels[0].id)
    cancelled = [
        e for e in webhook_receiver.received.bodies.values() if e["body"]["msg_type"] == "Cancel"
    ]
    assert len(cancelled) == 3
    assert alert_row(engine, tenant, cancels[0].id).state == m.SENT


def test_worker_shutdown_closes_http_session() -> None:
    from hub.alerts import httploop
    from hub.worker import app as worker_app

    loop = httploop.process_loop()

    async def open_session(http):
        return http

    session = loop.run(open_session)
    assert not session.closed

    worker_app._process_shutdown(pid=None)

    assert session.closed
    assert loop.loop.is_closed()
    assert httploop._current is None
