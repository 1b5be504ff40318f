"""Regional alert from composition to receivers, with Update, Cancel, expiry and approval.

Batches run through the task body (`fanout.deliver_batch`) in the test process against real
local receivers; the RabbitMQ path is covered by the end-to-end test.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from alerts_support import (
    BOSTON_POINT,
    NYC_POINT,
    OUTSIDE_POINT,
    HttpReceiver,
    SmtpReceiver,
    add_resident,
    add_tenant,
    cap_alert,
    manager,
    run_batches,
)
from sqlalchemy import Engine, select

from hub.alerts import fanout, service
from hub.alerts import models as m
from hub.alerts.policy import load_settings
from hub.alerts.subscriptions import SubscriptionInput, subscribe, unsubscribe
from hub.core.clock import utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from hub.core.outbox import OutboxMessage
from hub.core.tenancy import SystemContext
from privacy.keys import Keyring, new_data_key_row
from privacy.models import KIND_INDEX

# The receivers listen on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")


def compose(engine: Engine, tenant_id: str, cap, tenants=None) -> list[m.Alert]:
    scope = SystemContext("regional compose") if tenants else manager(tenant_id)
    with unit_of_work(scope, engine=engine) as session:
        return service.compose(session, manager(tenant_id), cap, tenants=tenants)


def approve(engine: Engine, tenant_id: str, alert_id: str, who: str) -> m.Alert:
    with unit_of_work(manager(tenant_id, who), engine=engine) as session:
        row = service.approve(
            session, manager(tenant_id, who), alert_id, settings=load_settings(session, tenant_id)
        )
    with unit_of_work(SystemContext("regional approval"), engine=engine) as session:
        service.refresh_group_approvals(session, row.group_id)
    return alert_row(engine, tenant_id, alert_id)


def send(engine: Engine, rows: list[m.Alert]) -> int:
    total = 0
    for row in rows:
        with unit_of_work(manager(row.tenant_id), engine=engine) as session:
            current = service.get_alert(session, row.id)
            service.rows_to_send([current])
            total += service.start_sending(
                session, current, load_settings(session, row.tenant_id), actor="cli:em1"
            )
    return total


def alert_row(engine: Engine, tenant_id: str, alert_id: str) -> m.Alert:
    with unit_of_work(manager(tenant_id), engine=engine) as session:
        return service.get_alert(session, alert_id)


@pytest.fixture
def region(engine: Engine, webhook_receiver: HttpReceiver, smtp_receiver: SmtpReceiver):
    alerts = {
        "providers": {
            "smtp": {"host": "127.0.0.1", "port": smtp_receiver.port, "sender": "alerts@test"}
        },
        "rate_limits": {"webhook": 1000, "email": 1000, "webpush": 1000, "sms": 1000},
    }
    nyc = add_tenant(engine, alerts=alerts)
    boston = add_tenant(engine, alerts=alerts, default_language="es")
    residents = {
        "nyc_en": add_resident(
            engine, nyc, NYC_POINT, {"webhook": webhook_receiver.url("/nyc-en")}, languages=["en"]
        ),
        "nyc_es": add_resident(
            engine,
            nyc,
            NYC_POINT,
            {"email": "residente@example.org"},
            languages=["es-MX", "en"],
        ),
        "boston_es": add_resident(
            engine,
            boston,
            BOSTON_POINT,
            {"webhook": webhook_receiver.url("/bos-es")},
            languages=["es"],
            test_opt_in=True,
        ),
        "outside": add_resident(
            engine, nyc, OUTSIDE_POINT, {"webhook": webhook_receiver.url("/outside")}
        ),
    }
    return nyc, boston, residents


def paths(receiver: HttpReceiver) -> list[str]:
    return sorted(entry["path"] for entry in receiver.received.bodies.values())


def test_regional_alert_reaches_area(engine, region, webhook_receiver, smtp_receiver) -> None:
    nyc, boston, _ = region
    rows = compose(engine, nyc, cap_alert("HU-1"), tenants=[boston])
    assert {r.tenant_id for r in rows} == {nyc, boston}

    for row in rows:
        approve(engine, row.tenant_id, row.id, "em2")
    assert send(engine, rows) == 3
    for row in rows:
        run_batches(engine, row.tenant_id, row.id)

    assert paths(webhook_receiver) == ["/bos-es", "/nyc-en"]
    assert max(webhook_receiver.received.keys.values()) == 1
    bodies = {e["path"]: e["body"] for e in webhook_receiver.received.bodies.values()}
    assert bodies["/nyc-en"]["language"] == "en-US"
    assert bodies["/bos-es"]["language"] == "es-US"
    emails = list(smtp_receiver.received.bodies.values())
    assert len(emails) == 1
    assert emails[0]["language"] == "es-US"
    assert emails[0]["subject"] == "Aviso de huracán"
    assert alert_row(engine, nyc, rows[0].id).state == m.SENT


def test_webhook_signed_with_hmac(engine, region, webhook_receiver) -> None:
    from hub.alerts.channels import webhook_secret
    from hub.requests.webhook import verify

    nyc, _, _ = region
    [row] = compose(engine, nyc, cap_alert("HU-SIG"))
    approve(engine, nyc, row.id, "em2")
    send(engine, [row])
    run_batches(engine, nyc, row.id)

    [entry] = webhook_receiver.received.bodies.values()
    import json

    body = json.dumps(entry["body"], ensure_ascii=False).encode("utf-8")
    assert verify(webhook_secret(nyc), body, entry["headers"]["X-Hub-Signature-256"])


def test_actual_needs_second_manager(engine, region) -> None:
    nyc, _, _ = region
    [row] = compose(engine, nyc, cap_alert("HU-2"))
    approved = approve(engine, nyc, row.id, "em1")  # the composer alone
    assert approved.state == m.DRAFT
    with pytest.raises(Forbidden):
        send(engine, [row])
    assert approve(engine, nyc, row.id, "em2").state == m.APPROVED


def test_immediate_extreme_single_approver(engine, region) -> None:
    nyc, _, _ = region
    cap = cap_alert("HU-3", urgency="Immediate", severity="Extreme")
    [row] = compose(engine, nyc, cap)
    approved = approve(engine, nyc, row.id, "em1")
    assert approved.state == m.APPROVED
    assert approved.review_due_at is not None


def test_regional_needs_each_tenant(engine, region) -> None:
    nyc, boston, _ = region
    rows = compose(engine, nyc, cap_alert("HU-4"), tenants=[boston])
    by_tenant = {r.tenant_id: r for r in rows}
    approve(engine, nyc, by_tenant[nyc].id, "em2")
    with pytest.raises(Forbidden):
        send(engine, rows)
    # An emergency manager of another tenant cannot see, let alone approve, Boston's row.
    with pytest.raises(NotFound):
        approve(engine, nyc, by_tenant[boston].id, "em2")


def test_regional_follows_origin_policy(engine, region) -> None:
    nyc, _, _ = region
    # Its policy accepts the originating tenant's approval; the default does not.
    follower = add_tenant(engine, alerts={"approval": {"regional_requires_each_tenant": False}})
    own = add_tenant(engine)
    rows = compose(engine, nyc, cap_alert("HU-4F"), tenants=[follower, own])
    by_tenant = {r.tenant_id: r for r in rows}
    approve(engine, nyc, by_tenant[nyc].id, "em2")
    assert alert_row(engine, follower, by_tenant[follower].id).state == m.APPROVED
    # By default a tenant approves its own part of a regional alert.
    assert alert_row(engine, own, by_tenant[own].id).state != m.APPROVED


def test_regional_outside_region_rejected(engine, region) -> None:
    nyc, _, _ = region
    stranger = add_tenant(engine, region="pacific")
    with pytest.raises(InvalidInput, match=f"tenant {stranger} is in region pacific"):
        compose(engine, nyc, cap_alert("HU-4X"), tenants=[stranger])


def test_exercise_reaches_test_opt_ins(engine, region, webhook_receiver) -> None:
    nyc, boston, _ = region
    rows = compose(engine, nyc, cap_alert("EX-1", status="Exercise"), tenants=[boston])
    for row in rows:
        approve(engine, row.tenant_id, row.id, "em1")
    assert send(engine, rows) == 1
    for row in rows:
        run_batches(engine, row.tenant_id, row.id)
    assert paths(webhook_receiver) == ["/bos-es"]


def test_reused_identifier_rejected(engine, region) -> None:
    nyc, _, _ = region
    compose(engine, nyc, cap_alert("HU-5"))
    with pytest.raises(Conflict):
        compose(engine, nyc, cap_alert("HU-5"))


def test_orphan_update_held(engine, region) -> None:
    nyc, _, _ = region
    refs = "em@region.example.org,NOPE,2026-01-01T00:00:00-00:00"
    [row] = compose(engine, nyc, cap_alert("UP-0", msg_type="Update", references=refs))
    assert row.state == m.HELD
    assert "unknown alert" in (row.hold_reason or "")
    with pytest.raises(Conflict):
        approve(engine, nyc, row.id, "em2")


def test_expired_alert_not_sent(engine, region) -> None:
    nyc, _, _ = region
    [row] = compose(engine, nyc, cap_alert("HU-6", expires_in=timedelta(seconds=1)))
    approve(engine, nyc, row.id, "em2")
    with unit_of_work(manager(nyc), engine=engine) as session:
        current = service.get_alert(session, row.id)
        current.expires_at = current.expires_at - timedelta(hours=1)
    with pytest.raises(InvalidInput, match="expired"):
        send(engine, [row])


def test_update_then_cancel(engine, region, webhook_receiver, smtp_receiver) -> None:
    nyc, _, _ = region
    first = cap_alert("HU-7")
    [row] = compose(engine, nyc, first)
    approve(engine, nyc, row.id, "em2")
    send(engine, [row])
    run_batches(engine, nyc, row.id)
    reached = len(webhook_receiver.received.keys) + len(smtp_receiver.received.keys)
    assert reached == 2

    ref = f"{first.sender},{first.identifier},{first.sent.isoformat()}"
    update_cap = cap_alert("HU-7-U1", msg_type="Update", references=ref)
    [update] = compose(engine, nyc, update_cap)
    assert update.references_alert_id == row.id
    approve(engine, nyc, update.id, "em2")
    assert send(engine, [update]) == 2
    run_batches(engine, nyc, update.id)
    assert alert_row(engine, nyc, row.id).state == m.SUPERSEDED

    cancel_ref = f"{update_cap.sender},{update_cap.identifier},{update_cap.sent.isoformat()}"
    cancel = cap_alert("HU-7-C", msg_type="Cancel", references=cancel_ref, with_info=False)
    [cancel_row] = compose(engine, nyc, cancel)
    approve(engine, nyc, cancel_row.id, "em2")
    assert send(engine, [cancel_row]) == 2
    run_batches(engine, nyc, cancel_row.id)
    assert alert_row(engine, nyc, update.id).state == m.CANCELLED

    cancel_bodies = [
        e["body"]
        for e in webhook_receiver.received.bodies.values()
        if e["body"]["msg_type"] == "Cancel"
    ]
    assert len(cancel_bodies) == 1
    assert cancel_bodies[0]["headline"].startswith("Cancelled")


def test_cancel_drops_pending_batches(engine, region, webhook_receiver) -> None:
    nyc, _, _ = region
    first = cap_alert("HU-8")
    [row] = compose(engine, nyc, first)
    approve(engine, nyc, row.id, "em2")
    send(engine, [row])  # batches queued, none run yet

    ref = f"{first.sender},{first.identifier},{first.sent.isoformat()}"
    cancel = cap_alert("HU-8-C", msg_type="Cancel", references=ref, with_info=False)
    [cancel_row] = compose(engine, nyc, cancel)
    approve(engine, nyc, cancel_row.id, "em2")
    assert send(engine, [cancel_row]) == 0  # nobody was reached, so nobody is told
    run_batches(engine, nyc, row.id)
    assert webhook_receiver.received.keys == {}
    with unit_of_work(manager(nyc), engine=engine) as session:
        states = set(session.scalars(select(m.Delivery.state).where(m.Delivery.alert_id == row.id)))
    assert states == {m.DROPPED}


def test_batch_twice_sends_once(engine, region, webhook_receiver) -> None:
    nyc, _, _ = region
    [row] = compose(engine, nyc, cap_alert("HU-9"))
    approve(engine, nyc, row.id, "em2")
    send(engine, [row])
    run_batches(engine, nyc, row.id)
    run_batches(engine, nyc, row.id)
    assert sum(webhook_receiver.received.keys.values()) == 1
    with unit_of_work(manager(nyc), engine=engine) as session:
        again = service.start_sending(
            session, service.get_alert(session, row.id), load_settings(session, nyc), actor="x"
        )
    assert again == 0


def test_deliveries_queued_on_urgent(engine, region) -> None:
    nyc, _, _ = region
    [row] = compose(engine, nyc, cap_alert("HU-10"))
    approve(engine, nyc, row.id, "em2")
    send(engine, [row])

    with unit_of_work(SystemContext("test"), engine=engine) as session:
        queues = set(
            session.scalars(
                select(OutboxMessage.queue).where(
                    OutboxMessage.task == service.DELIVER_TASK, OutboxMessage.tenant_id == nyc
                )
            )
        )
    assert queues == {"alerts.urgent"}


def _delivery_states(engine: Engine, tenant_id: str, alert_id: str) -> list[tuple[str, int]]:
    with unit_of_work(manager(tenant_id), engine=engine) as session:
        return list(
            session.execute(
                select(m.Delivery.state, m.Delivery.attempts).where(m.Delivery.alert_id == alert_id)
            ).all()
        )


def test_gone_endpoint_disables_channel(engine) -> None:
    gone = HttpReceiver(status=410).start()
    try:
        tenant = add_tenant(engine)
        add_resident(engine, tenant, NYC_POINT, {"webhook": gone.url("/gone")})
        [row] = compose(engine, tenant, cap_alert("GONE-1"))
        approve(engine, tenant, row.id, "em2")
        send(engine, [row])
        run_batches(engine, tenant, row.id)
    finally:
        gone.stop()
    assert _delivery_states(engine, tenant, row.id) == [(m.FAILED, 1)]
    with unit_of_work(manager(tenant), engine=engine) as session:
        channel = session.scalar(select(m.SubscriberChannel))
    assert channel.active is False
    assert channel.disabled_reason == "HTTP 410"


def test_transient_failure_retried_later(engine) -> None:
    failing = HttpReceiver(status=503).start()
    try:
        tenant = add_tenant(engine)
        add_resident(engine, tenant, NYC_POINT, {"webhook": failing.url("/busy")})
        [row] = compose(engine, tenant, cap_alert("BUSY-1"))
        approve(engine, tenant, row.id, "em2")
        send(engine, [row])
        run_batches(engine, tenant, row.id)
    finally:
        failing.stop()
    assert _delivery_states(engine, tenant, row.id) == [(m.PENDING, 1)]
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        retries = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.task == service.DELIVER_TASK, OutboxMessage.tenant_id == tenant
            )
        ).all()
    assert len(retries) == 2  # the first batch and its retry
    assert retries[1].available_at > retries[0].available_at


def test_notice_queued_on_bulk(engine, region) -> None:
    nyc, _, _ = region
    with unit_of_work(manager(nyc), engine=engine) as session:
        [row] = service.compose(session, manager(nyc), cap_alert("NOTICE-1"), kind="notice")
    approve(engine, nyc, row.id, "em2")
    send(engine, [row])
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        queues = set(
            session.scalars(
                select(OutboxMessage.queue).where(
                    OutboxMessage.task == service.DELIVER_TASK, OutboxMessage.tenant_id == nyc
                )
            )
        )
    assert queues == {"alerts.bulk"}


def test_batches_dropped_after_expiry(engine, region, webhook_receiver) -> None:
    nyc, _, _ = region
    [row] = compose(engine, nyc, cap_alert("HU-EXP"))
    approve(engine, nyc, row.id, "em2")
    send(engine, [row])
    with unit_of_work(manager(nyc), engine=engine) as session:
        current = service.get_alert(session, row.id)
        current.expires_at = current.sent - timedelta(minutes=1)
    run_batches(engine, nyc, row.id)
    assert webhook_receiver.received.keys == {}
    assert alert_row(engine, nyc, row.id).state == m.EXPIRED
    assert {state for state, _ in _delivery_states(engine, nyc, row.id)} == {m.DROPPED}


def test_import_command_subscribes(engine, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from hub.cli.main import app
    from hub.core.settings import reset_settings_cache

    tenant = add_tenant(engine)
    path = tmp_path / "optin.csv"
    path.write_text(
        "lat,lon,languages,email,sms,test_opt_in,consent_at\n"
        "40.71,-74.00,es;en,a@example.org,,false,2026-12-01T10:00:00-05:00\n"
        "40.72,-74.01,en,,+12125550100,true,2026-12-01T10:00:00-05:00\n"
        "north,-74.00,en,b@example.org,,false,2026-12-01T10:00:00-05:00\n"
        "40.73,-74.02,en,not-an-email,,false,2026-12-01T10:00:00-05:00\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("HUB_DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    reset_settings_cache()
    try:
        result = CliRunner().invoke(
            app, ["alerts", "subscribers", "import", str(path), "--tenant", tenant, "--json"]
        )
    finally:
        monkeypatch.delenv("HUB_DATABASE_URL")
        reset_settings_cache()
    assert result.exit_code == 0, result.output
    assert '"imported": 2' in result.output
    assert '"skipped": 2' in result.output
    assert "record 4" in result.output
    assert "record 5: email address is invalid" in result.output
    assert "not-an-email" not in result.output
    with unit_of_work(manager(tenant), engine=engine) as session:
        count = len(session.scalars(select(m.Subscriber)).all())
    assert count == 2


def test_cancel_stops_running_batch(engine, webhook_receiver, monkeypatch) -> None:
    tenant = add_tenant(engine, alerts={"rate_limits": {"webhook": 1000}})
    for number in range(3):
        add_resident(engine, tenant, NYC_POINT, {"webhook": webhook_receiver.url(f"/r{number}")})
    [row] = compose(engine, tenant, cap_alert("HU-STOP"))
    approve(engine, tenant, row.id, "em2")
    send(engine, [row])

    # One delivery per chunk; a Cancel lands while the first chunk is being sent.
    monkeypatch.setattr(fanout, "CHUNK_SIZE", 1)
    prepare = fanout._Sender._prepare
    calls = []

    def prepare_then_cancel(self, chunk):
        grants = prepare(self, chunk)
        calls.append(len(chunk))
        if len(calls) == 1:
            with unit_of_work(manager(tenant), engine=engine) as session:
                service.get_alert(session, row.id).state = m.CANCELLED
        return grants

    monkeypatch.setattr(fanout._Sender, "_prepare", prepare_then_cancel)
    result = fanout.deliver_batch(row.id, 0, tenant, engine=engine)

    assert result["reason"] == m.CANCELLED
    assert sum(webhook_receiver.received.keys.values()) == 1
    states = sorted(state for state, _ in _delivery_states(engine, tenant, row.id))
    assert states == [m.DROPPED, m.DROPPED, m.DELIVERED]


def _send_to_area(engine: Engine, tenant: str, identifier: str) -> m.Alert:
    [row] = compose(engine, tenant, cap_alert(identifier))
    approve(engine, tenant, row.id, "em2")
    send(engine, [row])
    run_batches(engine, tenant, row.id)
    return row


def _webhook_languages(receiver: HttpReceiver, path: str) -> list[str]:
    bodies = receiver.received.bodies.values()
    return sorted(entry["body"]["language"] for entry in bodies if entry["path"] == path)


def test_shared_address_gets_one_message(engine, region, webhook_receiver, smtp_receiver) -> None:
    """Three subscribers gave one webhook address: the two with the same languages get one
    message between them, the Spanish one its own. Preview counts what is sent."""
    nyc, _, _ = region
    shared = {"webhook": webhook_receiver.url("/shared")}
    add_resident(engine, nyc, NYC_POINT, {**shared, "email": "family@example.org"})
    add_resident(engine, nyc, NYC_POINT, shared)
    add_resident(engine, nyc, NYC_POINT, shared, languages=["es"])
    [row] = compose(engine, nyc, cap_alert("SHARED-1"))
    with unit_of_work(manager(nyc), engine=engine) as session:
        counted = service.preview(session, row, load_settings(session, nyc))
    approve(engine, nyc, row.id, "em2")

    # nyc_en, nyc_es (e-mail), then the shared address twice and the family e-mail once.
    assert send(engine, [row]) == counted.recipients == 5
    run_batches(engine, nyc, row.id)

    assert _webhook_languages(webhook_receiver, "/shared") == ["en-US", "es-US"]
    assert max(webhook_receiver.received.keys.values()) == 1
    assert len(smtp_receiver.received.bodies) == 2


def test_subscribe_canonicalizes_languages(engine) -> None:
    tenant = add_tenant(engine)
    subscriber_id = add_resident(
        engine, tenant, NYC_POINT, {"email": "ana@example.org"}, languages=["ES-us", "es-US", "en"]
    )

    with unit_of_work(manager(tenant), engine=engine) as session:
        stored = session.get(m.Subscriber, subscriber_id).languages

    assert stored == ["es-US", "en"]


def test_languages_in_other_case_deduplicated(engine, webhook_receiver) -> None:
    """One address subscribed with `es-US` and `es-us` gets one message."""
    tenant = add_tenant(engine)
    shared = {"webhook": webhook_receiver.url("/shared")}
    add_resident(engine, tenant, NYC_POINT, shared, languages=["es-US"])
    add_resident(engine, tenant, NYC_POINT, shared, languages=["es-us"])

    _send_to_area(engine, tenant, "SHARED-CASE-1")

    assert _webhook_languages(webhook_receiver, "/shared") == ["es-US"]


def test_stored_languages_compared_without_case(engine, webhook_receiver) -> None:
    """A language list stored in another case, as before opt-ins canonicalized it, still
    matches: the address gets one message, and preview counts one recipient for it."""
    tenant = add_tenant(engine)
    shared = {"webhook": webhook_receiver.url("/shared")}
    add_resident(engine, tenant, NYC_POINT, shared, languages=["es-US", "en"])
    older = add_resident(engine, tenant, NYC_POINT, shared, languages=["es-US", "en"])
    with unit_of_work(manager(tenant), engine=engine) as session:
        session.get(m.Subscriber, older).languages = ["ES-us", "EN"]
    [row] = compose(engine, tenant, cap_alert("SHARED-CASE-2"))
    with unit_of_work(manager(tenant), engine=engine) as session:
        counted = service.preview(session, row, load_settings(session, tenant))
    approve(engine, tenant, row.id, "em2")

    assert send(engine, [row]) == counted.recipients == 1
    run_batches(engine, tenant, row.id)

    assert _webhook_languages(webhook_receiver, "/shared") == ["es-US"]


def test_shared_address_linked_across_index_keys(engine, webhook_receiver) -> None:
    """A subscriber indexed under a newer index key is still linked to the older ones."""
    tenant = add_tenant(engine)
    shared = {"webhook": webhook_receiver.url("/shared")}
    add_resident(engine, tenant, NYC_POINT, shared)
    with unit_of_work(SystemContext("new index key"), engine=engine) as session:
        ring = Keyring.load(session, tenant)
        session.add(new_data_key_row(ring, KIND_INDEX, ring.primary_version(KIND_INDEX) + 1))
    add_resident(engine, tenant, NYC_POINT, shared)
    with unit_of_work(manager(tenant), engine=engine) as session:
        versions = set(session.scalars(select(m.SubscriberChannel.bidx_version)))
    assert len(versions) == 2

    _send_to_area(engine, tenant, "SHARED-2")

    assert _webhook_languages(webhook_receiver, "/shared") == ["en-US"]


def test_unsubscribe_stops_shared_address(engine, webhook_receiver) -> None:
    """Unsubscribing stops the address for every subscriber who gave it, and only it."""
    tenant = add_tenant(engine)
    shared = {"webhook": webhook_receiver.url("/shared")}
    ctx = manager(tenant)
    with unit_of_work(ctx, engine=engine) as session:
        first, token = subscribe(
            session,
            ctx,
            SubscriptionInput(
                places=[NYC_POINT], languages=["en"], channels=shared, consent_at=utcnow()
            ),
        )
    add_resident(engine, tenant, NYC_POINT, {**shared, "email": "other@example.org"})
    with unit_of_work(ctx, engine=engine) as session:
        unsubscribe(session, ctx, token)

    with unit_of_work(ctx, engine=engine) as session:
        states = session.execute(
            select(m.SubscriberChannel.channel, m.SubscriberChannel.active).where(
                m.SubscriberChannel.subscriber_id != first
            )
        ).all()
    assert sorted(states) == [("email", True), ("webhook", False)]


def test_gone_shared_address_disabled_for_all(engine) -> None:
    """One message went to the shared address and failed for good: both rows stop."""
    gone = HttpReceiver(status=410).start()
    try:
        tenant = add_tenant(engine)
        add_resident(engine, tenant, NYC_POINT, {"webhook": gone.url("/gone")})
        add_resident(engine, tenant, NYC_POINT, {"webhook": gone.url("/gone")})
        row = _send_to_area(engine, tenant, "GONE-2")
    finally:
        gone.stop()
    assert _delivery_states(engine, tenant, row.id) == [(m.FAILED, 1)]
    with unit_of_work(manager(tenant), engine=engine) as session:
        reasons = session.scalars(select(m.SubscriberChannel.disabled_reason)).all()
    assert reasons == ["HTTP 410", "HTTP 410"]


def _mark_delivered(engine: Engine, tenant: str, alert_id: str, subscriber_id: str) -> None:
    with unit_of_work(manager(tenant), engine=engine) as session:
        for delivery in session.scalars(
            select(m.Delivery).where(
                m.Delivery.alert_id == alert_id, m.Delivery.subscriber_id == subscriber_id
            )
        ):
            delivery.state = m.DELIVERED


def test_cancel_top_up_skips_reached_address(engine, webhook_receiver) -> None:
    """The Cancel reached the shared address through one subscriber. A chunk of the alert
    that lands later adds the other subscriber's own channel, not the address again."""
    tenant = add_tenant(engine)
    shared = webhook_receiver.url("/shared")
    first, second = sorted(
        add_resident(engine, tenant, NYC_POINT, {"webhook": shared, "sms": f"+1212555010{number}"})
        for number in (1, 2)
    )
    alert = cap_alert("TOPUP-1")
    [row] = compose(engine, tenant, alert)
    approve(engine, tenant, row.id, "em2")
    send(engine, [row])
    # Only the second subscriber's SMS went out before the Cancel.
    with unit_of_work(manager(tenant), engine=engine) as session:
        sms = session.scalars(
            select(m.Delivery).where(
                m.Delivery.subscriber_id == second, m.Delivery.channel == "sms"
            )
        ).one()
        sms.state = m.DELIVERED
    ref = f"{alert.sender},{alert.identifier},{alert.sent.isoformat()}"
    [cancel] = compose(
        engine, tenant, cap_alert("TOPUP-1-C", msg_type="Cancel", references=ref, with_info=False)
    )
    approve(engine, tenant, cancel.id, "em2")
    assert send(engine, [cancel]) == 2  # the second subscriber's SMS and the shared webhook

    # The first subscriber's chunk was on the wire and is recorded as sent afterwards.
    _mark_delivered(engine, tenant, row.id, first)
    with unit_of_work(manager(tenant), engine=engine) as session:
        added = service.add_cancel_recipients(session, row.id, {first})

    assert added == 1
    with unit_of_work(manager(tenant), engine=engine) as session:
        channels = session.execute(
            select(m.Delivery.subscriber_id, m.Delivery.channel).where(
                m.Delivery.alert_id == cancel.id
            )
        ).all()
    assert sorted(channels) == sorted([(second, "sms"), (second, "webhook"), (first, "sms")])


def test_concurrent_send_waits_for_first(pg_url: str, webhook_receiver: HttpReceiver) -> None:
    """A second send that reads the alert as approved while the first has not committed
    waits for it, then finds the alert sending and creates nothing."""
    engine = get_engine(pg_url)
    tenant = add_tenant(engine)
    add_resident(engine, tenant, NYC_POINT, {"webhook": webhook_receiver.url("/race")})
    [row] = compose(engine, tenant, cap_alert("RACE-1"))
    approve(engine, tenant, row.id, "em2")
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        with unit_of_work(manager(tenant), engine=engine) as session:
            current = service.get_alert(session, row.id)
            settings = load_settings(session, tenant)
            first = service.start_sending(session, current, settings, actor="cli:em1")
            second = pool.submit(send, engine, [row])
            time.sleep(0.5)
            assert not second.done()
        assert second.result(timeout=20) == 0
    finally:
        pool.shutdown(wait=True)

    assert first == 1
    assert alert_row(engine, tenant, row.id).state == m.SENDING
