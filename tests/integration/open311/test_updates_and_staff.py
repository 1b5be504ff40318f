"""Agency status updates, the staff JSON API, transfers and cross-tenant isolation."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from open311_support import INSIDE, error_entries, manifest_data, pothole_form
from sqlalchemy import func, select

from hub.core.clock import isoformat, utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.errors import Conflict
from hub.core.tenancy import ROLE_AGENCY, SystemContext, TenantContext
from hub.requests import service
from hub.requests.models import ServiceRequest, StatusEvent
from privacy.blind_index import blind_index_normalized
from privacy.models import AuditEntry
from tenants import keys as keys_module
from tenants.manifest import parse_manifest
from tenants.models import ApiKey
from tenants.onboarding import onboard_manifest

UPDATES = "/open311/v2/servicerequestupdates.json"


def _file(client, tenant, **overrides):
    response = client.post("/open311/v2/requests.json", data=pothole_form(tenant, **overrides))
    assert response.status_code == 201
    return response.json()[0]["service_request_id"]


def _update(client, tenant, request_id, update_id, status, *, key=None, **extra):
    form = {
        "jurisdiction_id": tenant.jurisdiction,
        "api_key": key or tenant.agency,
        "service_request_id": request_id,
        "update_id": update_id,
        "status": status,
        **extra,
    }
    return client.post(UPDATES, data=form)


def _staff(client, tenant, path, key=None):
    return client.get(path, headers={"Authorization": f"Bearer {key or tenant.staff}"})


def _event_count(hub_db, request_id):
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        return session.scalar(
            select(func.count())
            .select_from(StatusEvent)
            .where(StatusEvent.request_id == request_id)
        )


def test_update_is_deduplicated_by_update_id(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    first = _update(client, alpha, request_id, "agency-1", "acknowledged", description="On it")
    again = _update(client, alpha, request_id, "agency-1", "acknowledged", description="On it")
    assert first.status_code == 200
    assert again.status_code == 200
    assert first.json()[0]["duplicate"] is False
    assert again.json()[0]["duplicate"] is True
    assert _event_count(hub_db, request_id) == 2


def test_update_note_is_encrypted_and_staff_sees_it(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    _update(client, alpha, request_id, "agency-2", "in_progress", description="Crew sent 🚧")
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        event = session.scalars(
            select(StatusEvent).where(StatusEvent.update_id == "agency-2")
        ).one()
        assert b"Crew sent" not in event.note_enc
    history = _staff(client, alpha, f"/api/v1/tenants/{alpha.id}/requests/{request_id}").json()
    assert history["history"][-1]["note"] == "Crew sent 🚧"
    public = client.get(
        f"/open311/v2/requests/{request_id}.json",
        params={"jurisdiction_id": alpha.jurisdiction, "extensions": "true"},
    )
    assert b"Crew sent" not in public.content


def test_closing_and_transitions(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    bad_resolution = _update(client, alpha, request_id, "u-a", "closed", resolution="bored")
    closed = _update(client, alpha, request_id, "u-b", "closed", resolution="duplicate")
    to_ack = _update(client, alpha, request_id, "u-c", "acknowledged")
    reopened = _update(client, alpha, request_id, "u-d", "open")
    unknown_status = _update(client, alpha, request_id, "u-e", "archived")
    assert bad_resolution.status_code == 400
    assert "resolution is invalid" in bad_resolution.json()[0]["description"]
    assert closed.status_code == 200
    assert closed.json()[0]["status"] == "closed"
    assert to_ack.status_code == 409
    assert reopened.status_code == 200
    assert reopened.json()[0]["status_detail"] == "in_progress"
    assert unknown_status.status_code == 400


def test_closed_to_on_hold_conflict_names_allowed(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    _update(client, alpha, request_id, "h-1", "closed")
    on_hold = _update(client, alpha, request_id, "h-2", "on_hold")
    assert on_hold.status_code == 409
    assert on_hold.json()[0]["description"] == (
        "cannot change status from closed to on_hold; a request that is closed can change "
        "only to in_progress or closed"
    )


def _history(client, tenant, request_id):
    response = client.get(
        f"/open311/v2/requests/{request_id}.json",
        params={"jurisdiction_id": tenant.jurisdiction, "extensions": "true"},
    )
    assert response.status_code == 200
    return response.json()[0]


def test_out_of_order_update_keeps_later_status(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    # Later than the request's requested_datetime, so the earlier update sorts after it too.
    closed_at = utcnow().replace(microsecond=0) + timedelta(minutes=2)
    earlier_at = closed_at - timedelta(seconds=1)

    closed = _update(
        client, alpha, request_id, "o-1", "closed", updated_datetime=isoformat(closed_at)
    )
    late = _update(
        client, alpha, request_id, "o-2", "in_progress", updated_datetime=isoformat(earlier_at)
    )

    assert closed.status_code == 200
    assert late.status_code == 200
    assert late.json()[0]["status"] == "closed"
    assert late.json()[0]["status_detail"] == "closed"
    assert late.json()[0]["duplicate"] is False
    assert late.json()[0]["superseded"] is True
    assert closed.json()[0]["superseded"] is False
    entry = _history(client, alpha, request_id)
    assert entry["status"] == "closed"
    assert entry["extended_attributes"]["status_detail"] == "closed"
    assert entry["extended_attributes"]["resolution"] == "fixed"
    assert entry["updated_datetime"] == isoformat(closed_at)
    notes = entry["notes"]
    assert [note["status_detail"] for note in notes] == ["submitted", "in_progress", "closed"]
    assert [note["datetime"] for note in notes[1:]] == [
        isoformat(earlier_at),
        isoformat(closed_at),
    ]


def test_close_in_same_second_applies(client, tenants_ab, monkeypatch):
    """An update sent without a time, then a close dated in the same whole second: the close
    is the later update and sets the status."""
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    now = utcnow().replace(microsecond=700_000) + timedelta(minutes=2)
    monkeypatch.setattr(service, "utcnow", lambda: now)

    started = _update(client, alpha, request_id, "s-1", "in_progress")
    closed = _update(
        client,
        alpha,
        request_id,
        "s-2",
        "closed",
        updated_datetime=isoformat(now.replace(microsecond=0)),
    )

    assert started.status_code == 200, started.text
    assert closed.status_code == 200, closed.text
    assert closed.json()[0]["superseded"] is False
    entry = _history(client, alpha, request_id)
    assert entry["status"] == "closed"
    notes = [note["status_detail"] for note in entry["notes"]]
    assert notes == ["submitted", "in_progress", "closed"]


def test_update_before_hub_ack_sets_status(client, tenants_ab, hub_db):
    """An agency whose clock runs behind closes a request with a time before the hub recorded
    that the agency's webhook took it: the close sets the status."""
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    acknowledged_at = utcnow().replace(microsecond=0) + timedelta(minutes=2)
    with unit_of_work(TenantContext(alpha.id), engine=get_engine(hub_db)) as session:
        request = session.get(ServiceRequest, request_id)
        request.status = "acknowledged"
        session.add(
            StatusEvent(
                tenant_id=alpha.id,
                request_id=request_id,
                at=acknowledged_at,
                status="acknowledged",
                actor="agency:roads",
                channel="webhook",
            )
        )
    closed_at = acknowledged_at - timedelta(seconds=25)

    closed = _update(
        client, alpha, request_id, "k-1", "closed", updated_datetime=isoformat(closed_at)
    )

    assert closed.status_code == 200, closed.text
    assert closed.json()[0]["superseded"] is False
    assert closed.json()[0]["status"] == "closed"
    assert _history(client, alpha, request_id)["status"] == "closed"


def test_agency_acknowledged_counts_as_update(client, tenants_ab):
    """An agency's own `acknowledged` is an update: a close dated before it is out of order,
    and rejected, because closed cannot change to acknowledged."""
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    acknowledged_at = utcnow().replace(microsecond=0) + timedelta(minutes=2)
    _update(
        client,
        alpha,
        request_id,
        "a-1",
        "acknowledged",
        updated_datetime=isoformat(acknowledged_at),
    )

    closed = _update(
        client,
        alpha,
        request_id,
        "a-2",
        "closed",
        updated_datetime=isoformat(acknowledged_at - timedelta(minutes=1)),
    )

    assert closed.status_code == 409
    assert "before the update to acknowledged" in closed.json()[0]["description"]
    assert _history(client, alpha, request_id)["extended_attributes"]["status_detail"] == (
        "acknowledged"
    )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_updates_see_each_other(client, tenants_ab, hub_db):
    """Two updates of one request at once: the earlier-dated one waits for the later one's
    commit and is then out of order, so the request stays closed (PostgreSQL)."""
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    engine = get_engine(hub_db)
    ctx = TenantContext(alpha.id, actor="test")
    closed_at = utcnow().replace(microsecond=0) + timedelta(minutes=5)

    def earlier_update() -> None:
        with unit_of_work(ctx, engine=engine) as session:
            service.post_status_update(
                session, ctx, request_id, "in_progress", at=closed_at - timedelta(minutes=1)
            )

    with unit_of_work(ctx, engine=engine) as session:
        service.post_status_update(
            session, ctx, request_id, "closed", resolution="fixed", at=closed_at
        )
        # The second update waits for this transaction, which still has the request locked.
        other = threading.Thread(target=earlier_update)
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive()
    other.join(timeout=30)

    with unit_of_work(ctx, engine=engine) as session:
        assert session.get(ServiceRequest, request_id).status == "closed"


def test_out_of_order_update_checks_earlier_status(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    first_close = utcnow().replace(microsecond=0) + timedelta(minutes=1)
    reopen = first_close + timedelta(minutes=1)
    _update(client, alpha, request_id, "e-1", "closed", updated_datetime=isoformat(first_close))
    _update(client, alpha, request_id, "e-2", "in_progress", updated_datetime=isoformat(reopen))

    # Between the two updates the request was closed, and closed cannot go on hold.
    between = first_close + timedelta(seconds=30)
    on_hold = _update(
        client, alpha, request_id, "e-3", "on_hold", updated_datetime=isoformat(between)
    )

    assert on_hold.status_code == 409
    assert on_hold.json()[0]["description"] == (
        f"cannot change status from closed to on_hold at {isoformat(between)}; a request that "
        "is closed can change only to in_progress or closed"
    )
    assert _history(client, alpha, request_id)["extended_attributes"]["status_detail"] == (
        "in_progress"
    )


def test_out_of_order_update_checks_next_update(client, tenants_ab):
    """A late close between acknowledged and on_hold would show closed then on_hold."""
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    start = utcnow().replace(microsecond=0) + timedelta(minutes=1)
    _update(client, alpha, request_id, "n-1", "acknowledged", updated_datetime=isoformat(start))
    held_at = start + timedelta(seconds=20)
    _update(client, alpha, request_id, "n-2", "on_hold", updated_datetime=isoformat(held_at))

    between = start + timedelta(seconds=10)
    late = _update(client, alpha, request_id, "n-3", "closed", updated_datetime=isoformat(between))

    assert late.status_code == 409
    assert late.json()[0]["description"].startswith(
        f"cannot add status closed at {isoformat(between)} before the update to on_hold at "
        f"{isoformat(held_at)}"
    )
    notes = _history(client, alpha, request_id)["notes"]
    assert [note["status_detail"] for note in notes] == ["submitted", "acknowledged", "on_hold"]


def test_update_id_reused_for_other_change_is_409(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    first = _update(client, alpha, request_id, "w-1", "in_progress")
    other = _update(client, alpha, request_id, "w-1", "closed")

    assert first.status_code == 200
    assert other.status_code == 409
    assert other.json()[0]["description"] == (
        "update_id 'w-1' was already used for status in_progress; send a new update_id for "
        "another change"
    )
    assert _event_count(hub_db, request_id) == 2


def test_overflow_reused_update_id_is_409(client, tenants_ab, hub_db):
    """An overflow completion has no agencies to check, and still cannot reuse an update_id
    that names another request."""
    alpha, _ = tenants_ab
    first = _file(client, alpha)
    second = _file(client, alpha)
    _update(client, alpha, first, "contact:42", "in_progress")
    ctx = TenantContext(alpha.id, actor="overflow:agent")

    with unit_of_work(ctx, engine=get_engine(hub_db)) as session:
        with pytest.raises(Conflict) as caught:
            service.post_status_update(
                session, ctx, second, "in_progress", update_id="contact:42", channel="overflow"
            )

    assert "already used for another service request" in caught.value.message


def test_update_description_errors_name_description(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    response = _update(client, alpha, request_id, "d-1", "in_progress", description="<b>x</b>")

    assert response.status_code == 400
    assert response.json()[0]["description"] == (
        "description must be plain text without HTML markup"
    )


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_update_lists_every_problem(client, tenants_ab, hub_db, fmt):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    form = {
        "jurisdiction_id": alpha.jurisdiction,
        "api_key": alpha.agency,
        "service_request_id": request_id,
        "status": "pending",
        "resolution": "solved",
        "updated_datetime": "2024-01-01T00:00:00",
        "description": "<b>PRIVATE-NOTE</b>",
    }
    response = client.post(f"/open311/v2/servicerequestupdates.{fmt}", data=form)

    assert response.status_code == 400
    accepted = "open, submitted, acknowledged, in_progress, on_hold, closed"
    assert error_entries(response, fmt) == [
        (400, "update_id is required"),
        (400, f"status must be one of {accepted}"),
        (400, "updated_datetime has no UTC offset; add Z or an offset such as -05:00"),
        (
            400,
            "resolution is invalid; use one of fixed, duplicate, not_ours, no_action, cancelled",
        ),
        (400, "description must be plain text without HTML markup"),
    ]
    assert b"PRIVATE-NOTE" not in response.content
    assert _event_count(hub_db, request_id) == 1


def test_update_field_problems_before_stored_checks(client, tenants_ab):
    """An unknown request is reported only once the update's own fields are valid."""
    alpha, _ = tenants_ab
    response = _update(client, alpha, "no-such-request", "u-1", "pending")

    assert response.status_code == 400
    assert [entry["description"] for entry in response.json()] == [
        "status must be one of open, submitted, acknowledged, in_progress, on_hold, closed"
    ]
    missing = _update(client, alpha, "no-such-request", "u-1", "in_progress")
    assert missing.status_code == 404


def test_update_of_nul_request_id_is_404(client, tenants_ab):
    alpha, _ = tenants_ab
    response = _update(client, alpha, "NUL\x00ID", "u-nul", "in_progress")
    assert response.status_code == 404
    assert response.json()[0]["description"] == "service request not found"


def _graffiti(client, tenant):
    """File a graffiti request, which the tenant routes to its parks agency."""
    return _file(client, tenant, service_code="graffiti", **{"attribute[depth]": None})


def test_agency_key_updates_only_its_agencies(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    pothole_id = _file(client, alpha)
    graffiti_id = _graffiti(client, alpha)

    parks_on_pothole = _update(client, alpha, pothole_id, "p-1", "closed", key=alpha.parks)
    roads_on_graffiti = _update(client, alpha, graffiti_id, "p-2", "closed", key=alpha.agency)
    unknown = _update(client, alpha, "NOSUCHID", "p-3", "closed", key=alpha.parks)
    parks_on_graffiti = _update(client, alpha, graffiti_id, "p-4", "in_progress", key=alpha.parks)
    roads_on_pothole = _update(client, alpha, pothole_id, "p-5", "in_progress", key=alpha.agency)

    assert parks_on_pothole.status_code == 404
    assert parks_on_pothole.json()[0]["description"] == f"service request {pothole_id} not found"
    assert unknown.json()[0]["description"] == "service request NOSUCHID not found"
    assert roads_on_graffiti.status_code == 404
    assert roads_on_graffiti.json()[0]["description"] == (
        f"service request {graffiti_id} not found"
    )
    assert parks_on_graffiti.status_code == 200
    assert parks_on_graffiti.json()[0]["status_detail"] == "in_progress"
    assert roads_on_pothole.status_code == 200
    assert roads_on_pothole.json()[0]["status_detail"] == "in_progress"
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        updates = set(session.scalars(select(StatusEvent.update_id)))
    assert {"p-1", "p-2"}.isdisjoint(updates)


def test_agency_key_cannot_replay_other_agency_update(client, tenants_ab):
    alpha, _ = tenants_ab
    pothole_id = _file(client, alpha)
    graffiti_id = _graffiti(client, alpha)
    _update(client, alpha, pothole_id, "r-1", "in_progress", key=alpha.agency)

    same_request = _update(client, alpha, pothole_id, "r-1", "in_progress", key=alpha.parks)
    own_request = _update(client, alpha, graffiti_id, "r-1", "in_progress", key=alpha.parks)

    assert same_request.status_code == 404
    assert own_request.status_code == 409
    assert own_request.json()[0]["description"] == (
        "update_id 'r-1' was already used for another service request; send a new update_id"
    )
    assert pothole_id.encode() not in own_request.content


def test_agency_key_without_agencies_is_403(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    # A key stored before agency keys named their agencies.
    raw, prefix = keys_module.generate_key()
    ctx = TenantContext(alpha.id, actor="test")
    with unit_of_work(ctx, engine=get_engine(hub_db)) as session:
        row = ApiKey(
            tenant_id=alpha.id,
            prefix=prefix,
            key_hash=keys_module._hash(raw),
            label="old agency key",
            roles=[ROLE_AGENCY],
        )
        session.add(row)
        session.flush()
        key_id = row.id

    response = _update(client, alpha, request_id, "k-1", "closed", key=raw)

    assert response.status_code == 403
    assert response.json()[0]["description"].startswith(
        f"agency key {key_id} names no agency, so it cannot post updates; ask the city to "
        "create a key with `hub tenants keys create --role agency --agency CODE`"
    )
    assert _event_count(hub_db, request_id) == 1


def test_update_needs_agency_role(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    with_open311_key = _update(client, alpha, request_id, "u-1", "acknowledged", key=alpha.open311)
    missing_update_id = client.post(
        UPDATES,
        data={
            "jurisdiction_id": alpha.jurisdiction,
            "api_key": alpha.agency,
            "service_request_id": request_id,
            "status": "acknowledged",
        },
    )
    assert with_open311_key.status_code == 403
    assert missing_update_id.status_code == 400


def test_update_offset_less_date_is_400(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    response = _update(
        client, alpha, request_id, "u-9", "acknowledged", updated_datetime="2024-05-01T10:00:00"
    )
    assert response.status_code == 400


# --- cross-tenant -------------------------------------------------------------------------


def test_cross_tenant_reads_answer_404(client, tenants_ab):
    alpha, beta = tenants_ab
    beta_id = _file(client, beta)
    one = client.get(
        f"/open311/v2/requests/{beta_id}.json", params={"jurisdiction_id": alpha.jurisdiction}
    )
    listed = client.get(
        "/open311/v2/requests.json",
        params={"jurisdiction_id": alpha.jurisdiction, "service_request_id": beta_id},
    )
    staff = _staff(client, alpha, f"/api/v1/tenants/{beta.id}/requests/{beta_id}")
    staff_own_path = _staff(client, alpha, f"/api/v1/tenants/{alpha.id}/requests/{beta_id}")
    assert one.status_code == 404
    assert listed.json() == []
    assert staff.status_code == 404
    assert staff_own_path.status_code == 404


def test_cross_tenant_writes_rejected(client, tenants_ab, hub_db):
    alpha, beta = tenants_ab
    beta_id = _file(client, beta)
    post_with_alpha_key = client.post(
        "/open311/v2/requests.json", data=pothole_form(beta, api_key=alpha.open311)
    )
    update_with_alpha_key = _update(client, beta, beta_id, "x-1", "closed", key=alpha.agency)
    update_under_alpha = _update(client, alpha, beta_id, "x-2", "closed")
    transfer_by_alpha = client.post(
        f"/api/v1/tenants/{beta.id}/requests/{beta_id}/transfer",
        json={"to_tenant": alpha.id},
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )
    assert post_with_alpha_key.status_code == 403
    assert update_with_alpha_key.status_code == 403
    assert update_under_alpha.status_code == 404
    assert transfer_by_alpha.status_code == 404
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        row = session.get(ServiceRequest, beta_id)
        assert row.status == "submitted"
        assert row.tenant_id == beta.id


def test_find_by_contact_is_per_tenant(client, tenants_ab):
    alpha, beta = tenants_ab
    alpha_id = _file(client, alpha, phone="(215) 555-0199")
    _file(client, beta, phone="(215) 555-0199")
    by_phone = _staff(client, alpha, "/api/v1/requests/find?phone=%2B12155550199")
    by_email = _staff(client, alpha, "/api/v1/requests/find?email=RESIDENT@example.com")
    assert by_phone.status_code == 200
    assert [r["service_request_id"] for r in by_phone.json()["requests"]] == [alpha_id]
    assert alpha_id in [r["service_request_id"] for r in by_email.json()["requests"]]
    assert all(r["tenant_id"] == alpha.id for r in by_email.json()["requests"])


def _searches(hub_db, tenant):
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        return session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == tenant.id, AuditEntry.action == "pii.search")
            .order_by(AuditEntry.seq)
        ).all()


def test_find_by_body_is_audited(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    alpha_id = _file(client, alpha, phone="(215) 555-0199")
    response = client.post(
        "/api/v1/requests/find",
        json={"phone": "+12155550199"},
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )
    assert response.status_code == 200
    assert [r["service_request_id"] for r in response.json()["requests"]] == [alpha_id]
    assert "Deprecation" not in response.headers

    [entry] = _searches(hub_db, alpha)
    assert entry.actor.startswith("apikey:")
    assert entry.details["by"] == ["phone"]
    assert entry.details["results"] == 1
    assert entry.details["purpose"] is None
    assert entry.details["roles"] == ["staff"]
    assert "5550199" not in str(entry.details) + str(entry.subject)


def test_find_by_query_deprecated_and_audited(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    _file(client, alpha)
    response = _staff(client, alpha, "/api/v1/requests/find?email=nobody@example.com")
    assert response.status_code == 200
    assert response.json() == {"requests": []}
    assert response.headers["Deprecation"] == "true"
    [entry] = _searches(hub_db, alpha)
    assert entry.details["by"] == ["email"]
    assert entry.details["results"] == 0


def test_find_by_query_rejects_long_email(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    email = "a" * 400 + "@example.com"
    response = _staff(client, alpha, f"/api/v1/requests/find?email={email}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "email" in response.json()["error"]["message"]
    assert email not in response.text
    assert _searches(hub_db, alpha) == []


def test_find_rejects_undeclared_purpose(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    response = client.post(
        "/api/v1/requests/find",
        json={"email": "resident@example.com", "purpose": "staff.curious"},
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "undeclared_purpose"
    assert _searches(hub_db, alpha) == []
    assert [e.details["reason"] for e in _rejections(hub_db, alpha)] == ["undeclared_purpose"]


def test_staff_view_rejects_hub_purpose(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    response = _staff(
        client, alpha, f"/api/v1/tenants/{alpha.id}/requests/{request_id}?purpose=agency_delivery"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "undeclared_purpose"
    assert "email" not in response.json()
    assert [e.details["purpose"] for e in _rejections(hub_db, alpha)] == ["agency_delivery"]


def test_staff_read_audits_middleware_request_id(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    response = client.get(
        f"/api/v1/tenants/{alpha.id}/requests/{request_id}",
        headers={"Authorization": f"Bearer {alpha.staff}", "X-Request-Id": "r" * 300},
    )

    assert response.status_code == 200
    response_id = response.headers["x-request-id"]
    assert response_id != "r" * 300
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        entry = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == alpha.id, AuditEntry.action == "pii.decrypt")
            .order_by(AuditEntry.seq.desc())
        ).first()
    assert entry.details["request_id"] == response_id


def test_staff_api_role_checks(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    path = f"/api/v1/tenants/{alpha.id}/requests/{request_id}"
    auditor = _staff(client, alpha, path, key=alpha.auditor)
    open311 = _staff(client, alpha, path, key=alpha.open311)
    no_key = client.get(path)
    assert auditor.status_code == 403
    assert auditor.json()["error"]["code"] == "auditor_no_decrypt"
    assert open311.status_code == 403
    assert no_key.status_code == 403
    # Only the auditor's key tried to decrypt, and its attempt is audited.
    [entry] = _rejections(hub_db, alpha)
    assert entry.details["reason"] == "auditor_no_decrypt"
    assert entry.details["roles"] == ["auditor"]
    assert entry.details["purpose"] == "staff.request_view"


def test_auditor_rejected_before_row_read(client, tenants_ab, hub_db):
    """An auditor gets the same 403 for an unknown id, so it cannot probe which ids exist."""
    alpha, _ = tenants_ab
    path = f"/api/v1/tenants/{alpha.id}/requests/NOSUCHID00"
    response = _staff(client, alpha, path, key=alpha.auditor)
    assert response.status_code == 403
    assert [e.details["reason"] for e in _rejections(hub_db, alpha)] == ["auditor_no_decrypt"]


def test_staff_view_shows_address_id(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha, address_id="PARCEL-9911-0042", address_string="4 Elm Ct")
    staff = _staff(client, alpha, f"/api/v1/tenants/{alpha.id}/requests/{request_id}")
    assert staff.status_code == 200
    assert staff.json()["address_id"] == "PARCEL-9911-0042"
    assert staff.json()["address"] == "4 Elm Ct"


def test_account_and_device_ids_not_stored_in_clear(client, tenants_ab, hub_db):
    """The staff view shows the account id; the row keeps it encrypted, and the device id
    only as a blind index under the tenant's key."""
    alpha, _ = tenants_ab
    request_id = _file(client, alpha, account_id="acct-5521", device_id="device-77-aa")
    staff = _staff(client, alpha, f"/api/v1/tenants/{alpha.id}/requests/{request_id}")
    with unit_of_work(TenantContext(alpha.id), engine=get_engine(hub_db)) as session:
        row = session.get(ServiceRequest, request_id)
        expected, _ = blind_index_normalized(session, alpha.id, "device_id", "device-77-aa")

    assert staff.json()["account_id"] == "acct-5521"
    assert b"acct-5521" not in row.account_id_enc
    assert row.device_id_bidx == expected


def test_transfer_keeps_id_history_and_reencrypts(client, tenants_ab, hub_db):
    alpha, beta = tenants_ab
    request_id = _file(
        client, alpha, description="Wrong city ñ 😀", address_id="LOT-17-B", device_id="dev-1"
    )
    _update(client, alpha, request_id, "t-1", "acknowledged", description="Not ours")
    response = client.post(
        f"/api/v1/tenants/{alpha.id}/requests/{request_id}/transfer",
        json={"to_tenant": beta.id},
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )
    assert response.status_code == 200
    assert response.json()["transferred_from"] == alpha.id

    as_beta = _staff(client, beta, f"/api/v1/tenants/{beta.id}/requests/{request_id}")
    as_alpha = _staff(client, alpha, f"/api/v1/tenants/{alpha.id}/requests/{request_id}")
    assert as_beta.status_code == 200
    assert as_beta.json()["description"] == "Wrong city ñ 😀"
    assert as_beta.json()["address_id"] == "LOT-17-B"
    assert [h["channel"] for h in as_beta.json()["history"]] == ["api", "agency", "transfer"]
    assert as_beta.json()["history"][1]["note"] == "Not ours"
    assert as_alpha.status_code == 404
    public = client.get(
        f"/open311/v2/requests/{request_id}.json", params={"jurisdiction_id": beta.jurisdiction}
    )
    assert public.status_code == 200
    # The device index was under alpha's key, and beta cannot index the id it never stored.
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        assert session.get(ServiceRequest, request_id).device_id_bidx is None


def test_transfer_with_used_update_id(client, tenants_ab, hub_db):
    """Each city's agencies number their updates on their own, so the receiving city may
    have used the moved history's update_id already."""
    alpha, beta = tenants_ab
    request_id = _file(client, alpha)
    assert _update(client, alpha, request_id, "1", "acknowledged").status_code == 200
    beta_request = _file(client, beta)
    assert _update(client, beta, beta_request, "1", "acknowledged").status_code == 200

    response = client.post(
        f"/api/v1/tenants/{alpha.id}/requests/{request_id}/transfer",
        json={"to_tenant": beta.id},
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )

    assert response.status_code == 200
    as_beta = _staff(client, beta, f"/api/v1/tenants/{beta.id}/requests/{request_id}")
    assert [h["channel"] for h in as_beta.json()["history"]] == ["api", "agency", "transfer"]
    assert [h["update_id"] for h in as_beta.json()["history"]] == [None, None, None]
    # beta's agency can still resend its own update 1 for its own request.
    resend = _update(client, beta, beta_request, "1", "acknowledged")
    assert resend.status_code == 200
    assert resend.json()[0]["duplicate"] is True


def test_transfer_audited_in_both_chains(client, tenants_ab, hub_db):
    alpha, beta = tenants_ab
    request_id = _file(client, alpha)
    response = client.post(
        f"/api/v1/tenants/{alpha.id}/requests/{request_id}/transfer",
        json={"to_tenant": beta.id, "service_code": "graffiti"},
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )
    assert response.status_code == 200

    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action.like("request.transfer_%"))
        ).all()
    by_action = {entry.action: entry for entry in entries}
    sent, received = by_action["request.transfer_out"], by_action["request.transfer_in"]
    assert sent.chain == alpha.id
    assert received.chain == beta.id
    for entry in (sent, received):
        assert entry.details["from_tenant"] == alpha.id
        assert entry.details["to_tenant"] == beta.id
        assert entry.details["to_service_code"] == "graffiti"
        assert entry.details["roles"] == ["staff"]
        assert entry.actor == sent.actor
        assert entry.actor.startswith("apikey:")
    assert sent.details["transfer_id"] == received.details["transfer_id"]
    # The request id is kept only as each tenant's own HMAC.
    assert request_id not in str(sent.details) + str(received.details)
    assert sent.subject != received.subject


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_token_of_other_tenant_is_404(client, tenants_ab, fmt):
    alpha, beta = tenants_ab
    client.app.state.open311_degraded = lambda: True
    token = client.post("/open311/v2/requests.json", data=pothole_form(beta)).json()[0]["token"]
    response = client.get(
        f"/open311/v2/tokens/{token}.{fmt}", params={"jurisdiction_id": alpha.jurisdiction}
    )
    assert response.status_code == 404


def test_transfer_to_sensitive_service_hides_point(client, tenants_ab, hub_db):
    alpha, beta = tenants_ab
    request_id = _file(client, alpha)
    response = client.post(
        f"/api/v1/tenants/{alpha.id}/requests/{request_id}/transfer",
        json={"to_tenant": beta.id, "service_code": "graffiti"},
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )
    assert response.status_code == 200
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        row = session.get(ServiceRequest, request_id)
        assert row.service_code == "graffiti"
        assert row.location_enc is not None
        assert (row.lat, row.lon) != INSIDE
        # The pothole's resolution-9 cell is not kept for the location-sensitive service.
        assert row.h3_cell is None
    staff = _staff(client, beta, f"/api/v1/tenants/{beta.id}/requests/{request_id}").json()
    assert (staff["lat"], staff["long"]) == INSIDE


def _declare_staff_purposes(hub_db, tenant, codes):
    """Onboard the tenant's manifest again, declaring `codes` as its staff purposes."""
    region = "region-" + tenant.id.split("-", 1)[1]
    data = manifest_data(tenant.id, tenant.jurisdiction, region=region)
    data["privacy"] = {
        "decryption_purposes": [
            {"code": code, "descriptions": {"en": f"Test purpose {code}.", "es": "Prueba."}}
            for code in codes
        ]
    }
    with unit_of_work(SystemContext("test onboarding"), engine=get_engine(hub_db)) as session:
        onboard_manifest(session, parse_manifest(data), actor="test")


def _rejections(hub_db, tenant):
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        return session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == tenant.id, AuditEntry.action == "pii.decrypt_rejected")
            .order_by(AuditEntry.seq)
        ).all()


def test_staff_api_rejects_undeclared_purpose(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    path = f"/api/v1/tenants/{alpha.id}/requests/{request_id}?purpose=staff.curious"

    response = _staff(client, alpha, path)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "undeclared_purpose"
    assert "'staff.curious' is not declared" in error["message"]
    # The manifest declares none, so the default staff purpose is the one to use.
    assert "(staff.request_view)" in error["message"]
    [entry] = _rejections(hub_db, alpha)
    assert entry.details["purpose"] == "staff.curious"
    assert entry.details["reason"] == "undeclared_purpose"
    assert entry.details["roles"] == ["staff"]


def test_staff_api_accepts_declared_purpose(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha, email="resident@example.org")
    _declare_staff_purposes(hub_db, alpha, ["staff.resident_callback"])
    path = f"/api/v1/tenants/{alpha.id}/requests/{request_id}"

    declared = _staff(client, alpha, f"{path}?purpose=staff.resident_callback")
    # The manifest's own list replaces the default purpose, which the API uses when the
    # caller names none.
    default = _staff(client, alpha, path)

    assert declared.status_code == 200
    assert declared.json()["email"] == "resident@example.org"
    assert default.status_code == 400
    assert default.json()["error"]["code"] == "undeclared_purpose"
    assert "(staff.resident_callback)" in default.json()["error"]["message"]


def test_update_retried_after_integrity_error_keeps_its_note(
    client, tenants_ab, hub_db, monkeypatch
):
    """When the first try of an update fails on a constraint, the second try stores the
    update with its note, as the agency sent it."""
    from sqlalchemy.exc import IntegrityError

    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    real = service.post_status_update
    calls = []

    def fail_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT", {}, Exception("constraint"))
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "post_status_update", fail_first)
    answer = _update(client, alpha, request_id, "agency-9", "in_progress", description="Crew out")

    assert answer.status_code == 200, answer.text
    assert len(calls) == 2
    history = _staff(client, alpha, f"/api/v1/tenants/{alpha.id}/requests/{request_id}").json()
    assert history["history"][-1]["note"] == "Crew out"
