"""Rotating an agency's webhook secret while deliveries go out, on a real database and a
loopback receiver that checks signatures as an agency would."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pipeline_support import add_request, add_tenant
from sqlalchemy import Engine, select

from hub.cli.demo.receiver import AgencyReceiver
from hub.core.clock import as_utc, utcnow
from hub.core.db import unit_of_work
from hub.core.errors import InvalidInput
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import routing
from hub.requests.models import Delivery
from hub.requests.tasks import route
from privacy.fields import DecryptionFailed
from privacy.models import AuditEntry
from tenants.agencies import (
    ROTATE_ACTION,
    RotatedSecret,
    rotate_webhook_secret,
    webhook_secrets,
)
from tenants.models import Agency


def _rotate(engine: Engine, tenant_id: str, overlap_hours: float) -> RotatedSecret:
    ctx = TenantContext(tenant_id=tenant_id, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        return rotate_webhook_secret(session, ctx, "dpw", overlap_hours=overlap_hours)


def _delivery(engine: Engine, request_id: str) -> Delivery:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        return session.scalars(select(Delivery).where(Delivery.request_id == request_id)).one()


def _claim(engine: Engine, tenant_id: str, request_id: str) -> routing.Claim:
    ctx = TenantContext(tenant_id=tenant_id, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        (claim,) = routing.claim_deliveries(session, ctx, request_id)
    return claim


def test_overlap_accepts_old_and_new(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    path = receiver.path_for(tenant_id, "dpw")
    old_secret = receiver.secrets[path]

    rotated = _rotate(configured_db, tenant_id, 24)
    before_switch = add_request(configured_db, tenant_id, ["dpw"])
    route(before_switch, tenant_id=tenant_id)
    receiver.secrets[path] = rotated.secret
    after_switch = add_request(configured_db, tenant_id, ["dpw"])
    route(after_switch, tenant_id=tenant_id)

    assert rotated.secret != old_secret
    assert rotated.previous_valid_until is not None
    assert receiver.rejected[path] == 0
    assert _delivery(configured_db, before_switch).state == "sent"
    assert _delivery(configured_db, after_switch).state == "sent"


def test_claim_signs_with_previous_secret(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    old_secret = receiver.secrets[receiver.path_for(tenant_id, "dpw")]

    rotated = _rotate(configured_db, tenant_id, 2)
    claim = _claim(configured_db, tenant_id, add_request(configured_db, tenant_id, ["dpw"]))

    assert claim.secret == rotated.secret
    assert claim.previous_secret == old_secret
    assert rotated.previous_valid_until is not None
    hours = (rotated.previous_valid_until - utcnow()).total_seconds() / 3600
    assert 1.9 < hours <= 2.0


def test_overlap_end_drops_old_secret(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    path = receiver.path_for(tenant_id, "dpw")
    _rotate(configured_db, tenant_id, 24)
    with unit_of_work(SystemContext("test: the overlap ends"), engine=configured_db) as session:
        agency = session.scalars(select(Agency).where(Agency.tenant_id == tenant_id)).one()
        agency.previous_webhook_secret_expires_at = utcnow() - timedelta(seconds=1)
    request_id = add_request(configured_db, tenant_id, ["dpw"])

    claim = _claim(configured_db, tenant_id, request_id)
    with unit_of_work(SystemContext("test: due again"), engine=configured_db) as session:
        session.get(Delivery, claim.delivery_id).next_attempt_at = None
    outcomes = route(request_id, tenant_id=tenant_id)

    assert claim.previous_secret is None
    assert outcomes == {"dead": 1}
    assert receiver.rejected[path] == 1
    assert _delivery(configured_db, request_id).last_error == "HTTP 401"


def test_zero_overlap_replaces_at_once(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])

    rotated = _rotate(configured_db, tenant_id, 0)
    claim = _claim(configured_db, tenant_id, add_request(configured_db, tenant_id, ["dpw"]))

    assert rotated.previous_valid_until is None
    assert claim.secret == rotated.secret
    assert claim.previous_secret is None
    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        agency = session.scalars(select(Agency).where(Agency.tenant_id == tenant_id)).one()
        assert agency.previous_webhook_secret_enc is None
        assert agency.previous_webhook_secret_expires_at is None


def test_second_rotation_keeps_one_previous(
    configured_db: Engine, receiver: AgencyReceiver
) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])

    first = _rotate(configured_db, tenant_id, 24)
    second = _rotate(configured_db, tenant_id, 24)
    claim = _claim(configured_db, tenant_id, add_request(configured_db, tenant_id, ["dpw"]))

    assert claim.secret == second.secret
    assert claim.previous_secret == first.secret


def test_rotation_audited_without_secret(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    old_secret = receiver.secrets[receiver.path_for(tenant_id, "dpw")]

    rotated = _rotate(configured_db, tenant_id, 12)

    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        (entry,) = session.scalars(
            select(AuditEntry).where(
                AuditEntry.tenant_id == tenant_id, AuditEntry.action == ROTATE_ACTION
            )
        ).all()
        details = dict(entry.details)
        actor = entry.actor
    assert actor == "test"
    assert details["agency_code"] == "dpw"
    assert details["overlap_hours"] == 12
    assert details["previous_valid_until"] == as_utc(rotated.previous_valid_until).isoformat(
        timespec="seconds"
    )
    assert rotated.secret not in str(details)
    assert old_secret not in str(details)


@pytest.mark.parametrize("hours", [-1.0, float("nan"), float("inf"), 169.0])
def test_rotation_rejects_bad_overlap(
    configured_db: Engine, receiver: AgencyReceiver, hours: float
) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    old_secret = receiver.secrets[receiver.path_for(tenant_id, "dpw")]

    with pytest.raises(InvalidInput, match="invalid overlap_hours"):
        _rotate(configured_db, tenant_id, hours)

    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        agency = session.scalars(select(Agency).where(Agency.tenant_id == tenant_id)).one()
        assert webhook_secrets(session, agency).current == old_secret


def _copy_secret(engine: Engine, tenant_id: str, *, source: str, target: str) -> None:
    """Copy the secret ciphertext of agency `source` over that of agency `target`."""
    with unit_of_work(SystemContext("test: move a ciphertext"), engine=engine) as session:
        rows = {
            row.code: row
            for row in session.scalars(select(Agency).where(Agency.tenant_id == tenant_id))
        }
        rows[target].webhook_secret_enc = rows[source].webhook_secret_enc


def test_moved_secret_marks_delivery_dead(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "parks"])
    _copy_secret(configured_db, tenant_id, source="parks", target="dpw")
    request_id = add_request(configured_db, tenant_id, ["dpw"])

    outcomes = route(request_id, tenant_id=tenant_id)

    delivery = _delivery(configured_db, request_id)
    assert outcomes == {}
    assert delivery.state == "dead"
    assert delivery.last_error == "webhook secret not decrypted: decryption_failed"
    assert receiver.count_for(receiver.path_for(tenant_id, "dpw")) == 0


def test_zero_overlap_replaces_moved_secret(
    configured_db: Engine, receiver: AgencyReceiver
) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "parks"])
    _copy_secret(configured_db, tenant_id, source="parks", target="dpw")

    with pytest.raises(DecryptionFailed):
        _rotate(configured_db, tenant_id, 1)
    rotated = _rotate(configured_db, tenant_id, 0)
    receiver.secrets[receiver.path_for(tenant_id, "dpw")] = rotated.secret
    request_id = add_request(configured_db, tenant_id, ["dpw"])

    assert route(request_id, tenant_id=tenant_id) == {"sent": 1}
