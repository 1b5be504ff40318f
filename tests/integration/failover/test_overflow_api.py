from datetime import timedelta

import pytest
from overflow_support import auth, beat, onboard_test_partner
from prometheus_client import REGISTRY
from sqlalchemy import select

from failover.models import Contact, OverflowSwitch
from hub.core.clock import utcnow
from hub.core.db import unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.tenancy import ROLE_PARTNER_AGENT, SystemContext, TenantContext
from privacy.models import AuditEntry
from tenants.keys import create_api_key

CONTACTS = "/api/v1/overflow/contacts"


def post_contact(client, tenant, **overrides):
    body = {
        "channel": "call",
        "language": "es-US",
        "service_group": "streets",
        "caller_name": "Ada Lovelace",
        "phone": "+1 215 555 0100",
        "address": "12 Analytical Way",
        "summary": "Streetlight out since Monday",
    }
    body.update(overrides)
    return client.post(CONTACTS, json=body, headers=auth(tenant.agent))


def tick(engine, board, tenant, partners, at, *, home_available):
    """Heartbeats from every center at simulated time `at`, then a board reload at `at`."""
    beat(engine, tenant.home, staffed=2, available=home_available, now=at)
    for partner in partners:
        beat(engine, partner.center_id, staffed=20, available=20, now=at)
    board.refresh(now=at)


def post_contact_with(client, key):
    body = {"channel": "call", "language": "en", "service_group": "streets"}
    return client.post(CONTACTS, json=body, headers=auth(key))


def surge(engine, board, tenant, *partners):
    """Keep the home center busy long enough for overflow to switch on; return the time."""
    start = utcnow()
    tick(engine, board, tenant, partners, start, home_available=0)
    tick(engine, board, tenant, partners, start + timedelta(seconds=61), home_available=0)
    # The contacts the test posts next are routed at the real time, with fresh heartbeats.
    tick(engine, board, tenant, partners, utcnow(), home_available=0)
    return utcnow()


def audit_actions(engine, tenant_id):
    with unit_of_work(SystemContext("test audit read"), engine=engine) as session:
        return list(
            session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.tenant_id == tenant_id)
                .order_by(AuditEntry.seq)
            )
        )


def test_contact_stays_home_without_surge(client, engine, board, tenant):
    onboard_test_partner(engine, tenant)
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    response = post_contact(client, tenant)
    assert response.status_code == 201
    body = response.json()
    assert body["target"] == "home"
    assert body["center_id"] == tenant.home
    assert body["decision_id"]


def test_decision_audit_task_runs_once(client, engine, board, tenant):
    from failover.tasks import audit_decisions

    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    contact_id = post_contact(client, tenant).json()["contact_id"]
    assert "overflow.route" not in audit_actions(engine, tenant.id)
    assert audit_decisions(tenant_id=tenant.id) == 1
    assert audit_decisions(tenant_id=tenant.id) == 0
    assert audit_actions(engine, tenant.id).count("overflow.route") == 1
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        assert session.get(Contact, contact_id).decision_audited is True


def test_audit_run_passes_one_batch(client, engine, board, tenant):
    from failover.tasks import audit_decisions

    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    for _ in range(5):
        post_contact(client, tenant)
    # Batches of two: two full ones and a short one in one run.
    assert audit_decisions(tenant_id=tenant.id, limit=2) == 5
    assert audit_actions(engine, tenant.id).count("overflow.route") == 5


def routed_past_partner(client, engine, board, tenant, **personal):
    """Surge the tenant with a Spanish-only partner and one that takes an English contact.

    Without personal fields the contact takes the one-round-trip insert on PostgreSQL.
    """
    spanish = onboard_test_partner(engine, tenant, languages=("es",))
    both = onboard_test_partner(engine, tenant)
    surge(engine, board, tenant, spanish, both)
    body = {"channel": "call", "language": "en", "service_group": "streets", **personal}
    routed = client.post(CONTACTS, json=body, headers=auth(tenant.agent))
    assert routed.status_code == 201
    assert routed.json()["center_id"] == both.center_id
    return routed.json()["contact_id"], spanish, both


def route_audit_details(engine, tenant_id):
    with unit_of_work(SystemContext("test audit read"), engine=engine) as session:
        return session.scalars(
            select(AuditEntry.details).where(
                AuditEntry.tenant_id == tenant_id, AuditEntry.action == "overflow.route"
            )
        ).one()


def test_decision_audit_names_passed_over(client, engine, board, tenant):
    from failover.tasks import audit_decisions

    contact_id, spanish, _both = routed_past_partner(client, engine, board, tenant)
    assert audit_decisions(tenant_id=tenant.id) == 1
    details = route_audit_details(engine, tenant.id)
    assert details["contact_id"] == contact_id
    assert details["excluded_partners"] == [f"{spanish.center_id}:language"]


def test_normal_decision_audit_excludes_none(client, engine, board, tenant):
    from failover.tasks import audit_decisions

    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    assert post_contact_with(client, tenant.agent).status_code == 201
    assert audit_decisions(tenant_id=tenant.id) == 1
    assert route_audit_details(engine, tenant.id)["excluded_partners"] == []


def test_supervisor_view_shows_passed_over(client, engine, board, tenant):
    contact_id, spanish, both = routed_past_partner(
        client, engine, board, tenant, caller_name="Ada Lovelace"
    )
    view = client.get(f"{CONTACTS}/{contact_id}", headers=auth(tenant.supervisor))
    assert view.status_code == 200
    assert view.json()["excluded_partners"] == {spanish.center_id: "language"}

    partner_view = client.get(f"{CONTACTS}/{contact_id}", headers=auth(both.agent_key))
    assert partner_view.status_code == 200
    assert "excluded_partners" not in partner_view.json()


def test_board_queues_decision_audit(client, engine, board, tenant):
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    post_contact(client, tenant)
    board.refresh()
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        queued = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.task == "failover.audit_decisions",
                OutboxMessage.tenant_id == tenant.id,
            )
        ).all()
    assert len(queued) == 1
    assert queued[0].kwargs == {"tenant_id": tenant.id}


def overflow_gauge(tenant_id: str) -> float | None:
    return REGISTRY.get_sample_value(
        "hub_overflow_state", {"tenant": tenant_id, "switch": "overflow"}
    )


def test_surge_routes_to_partner_then_home(client, engine, board, tenant):
    partner = onboard_test_partner(engine, tenant)
    t = surge(engine, board, tenant, partner)
    assert board.switches[tenant.id].overflow_on is True
    assert overflow_gauge(tenant.id) == 1

    routed = post_contact(client, tenant).json()
    assert routed["target"] == "partner"
    assert routed["center_id"] == partner.center_id
    assert routed["reason"] == "overflow"

    # Recovery: agents free again, wait below the low threshold for the hold time.
    tick(engine, board, tenant, [partner], t + timedelta(seconds=1), home_available=2)
    assert board.switches[tenant.id].overflow_on is True
    tick(engine, board, tenant, [partner], t + timedelta(seconds=122), home_available=2)
    assert board.switches[tenant.id].overflow_on is False
    assert overflow_gauge(tenant.id) == 0
    tick(engine, board, tenant, [partner], utcnow(), home_available=2)

    home = post_contact(client, tenant).json()
    assert home["target"] == "home"
    actions = audit_actions(engine, tenant.id)
    assert "overflow.overflow_on" in actions
    assert "overflow.overflow_off" in actions


def test_contact_already_with_partner_stays_there(client, engine, board, tenant):
    partner = onboard_test_partner(engine, tenant)
    t = surge(engine, board, tenant, partner)
    routed = post_contact(client, tenant).json()
    tick(engine, board, tenant, [partner], t + timedelta(seconds=200), home_available=2)
    tick(engine, board, tenant, [partner], t + timedelta(seconds=400), home_available=2)
    assert board.switches[tenant.id].overflow_on is False

    # The home agent cannot take it back, and the partner can still claim it.
    taken_back = client.post(f"{CONTACTS}/{routed['contact_id']}/claim", headers=auth(tenant.agent))
    assert taken_back.status_code == 409
    claimed = client.post(
        f"{CONTACTS}/{routed['contact_id']}/claim", headers=auth(partner.agent_key)
    )
    assert claimed.status_code == 200


def test_disaster_mode_and_recovery(client, engine, board, tenant):
    partner = onboard_test_partner(engine, tenant)
    beat(engine, partner.center_id, staffed=20, available=20)
    # The home center's last heartbeat is a minute old: its heartbeats stopped.
    beat(engine, tenant.home, staffed=2, available=2, now=utcnow() - timedelta(seconds=60))
    board.refresh()
    assert board.switches[tenant.id].disaster is True
    for _ in range(3):
        body = post_contact(client, tenant).json()
        assert body["target"] == "partner"
        assert body["reason"] == "disaster"

    restored = client.post(
        f"/api/v1/overflow/centers/{tenant.home}/heartbeat",
        json={"agents_staffed": 2, "agents_available": 2},
        headers=auth(tenant.supervisor),
    )
    assert restored.status_code == 200
    board.refresh()
    assert board.switches[tenant.id].disaster is False
    assert post_contact(client, tenant).json()["target"] == "home"
    actions = audit_actions(engine, tenant.id)
    assert "overflow.disaster_on" in actions
    assert "overflow.disaster_off" in actions


def test_outage_time_not_counted_as_low_hold(client, engine, board, tenant):
    # low_hold_seconds is 120 and heartbeat_timeout_seconds 30 in these tests.
    partner = onboard_test_partner(engine, tenant)
    t = surge(engine, board, tenant, partner)
    assert board.switches[tenant.id].overflow_on is True

    def tick_at(seconds, *, home_beats=True):
        at = t + timedelta(seconds=seconds)
        if home_beats:
            beat(engine, tenant.home, staffed=2, available=2, now=at, sync=False)
        beat(engine, partner.center_id, staffed=20, available=20, now=at, sync=False)
        board.refresh(now=at)
        return board.switches[tenant.id]

    # The home center's heartbeats stop for five minutes; only the partner's arrive.
    for seconds in (100, 200, 300):
        assert tick_at(seconds, home_beats=False).disaster is True

    # Heartbeats resume with idle agents: the low hold starts now, not at the outage.
    resumed = tick_at(310)
    assert resumed.disaster is False
    assert resumed.overflow_on is True
    assert tick_at(420).overflow_on is True
    assert tick_at(431).overflow_on is False


def test_language_excludes_partner(client, engine, board, tenant):
    partner = onboard_test_partner(engine, tenant, languages=("en",))
    surge(engine, board, tenant, partner)
    body = post_contact(client, tenant, language="es").json()
    assert body["target"] == "home"
    assert body["reason"] == "no_eligible_partner"


def test_repeated_external_id_returns_first_decision(client, engine, board, tenant):
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    first = post_contact(client, tenant, external_id="pbx-1")
    second = post_contact(client, tenant, external_id="pbx-1")
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["decision_id"] == first.json()["decision_id"]


def test_invalid_contact_rejected_with_field(client, tenant):
    response = post_contact(client, tenant, channel="fax")
    assert response.status_code == 400
    assert "channel 'fax' is invalid" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"channel": "call", "language": "en"}', "service_group"),
        (b'{"channel": "call", "language": "en", "service_group": 7}', "service_group"),
        (b'{"channel": "call", "language": "en", "service_group": "x", "pin": "1"}', "pin"),
        (b'{"channel": "call", "language": "Ada Lovelace"', ""),
        (b"", ""),
    ],
)
def test_malformed_contact_body_named(client, tenant, body, named):
    response = client.post(
        CONTACTS,
        content=body,
        headers={**auth(tenant.agent), "content-type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert named in error["message"]
    assert "Ada Lovelace" not in response.text


def test_keyless_contact_rejected_first(client, tenant):
    response = client.post(CONTACTS, json={"channel": "call", "language": "en"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_api_key"


def _routed_to(client, engine, board, tenant, level):
    partner = onboard_test_partner(engine, tenant, data_level=level)
    surge(engine, board, tenant, partner)
    body = post_contact(client, tenant).json()
    assert body["center_id"] == partner.center_id
    return partner, body["contact_id"]


def test_partner_minimal_level_sees_no_personal_data(client, engine, board, tenant):
    partner, contact_id = _routed_to(client, engine, board, tenant, "minimal")
    view = client.get(f"{CONTACTS}/{contact_id}", headers=auth(partner.agent_key)).json()
    assert view["service_group"] == "streets"
    for field in ("caller_name", "phone", "address", "summary", "request_id"):
        assert field not in view
    assert "Ada" not in str(view)
    listing = client.get(
        f"/api/v1/overflow/centers/{partner.center_id}/contacts", headers=auth(partner.agent_key)
    )
    assert "Ada" not in listing.text
    assert "pii.decrypt" not in audit_actions(engine, tenant.id)


def test_partner_standard_level_sees_name_not_phone(client, engine, board, tenant):
    partner, contact_id = _routed_to(client, engine, board, tenant, "standard")
    view = client.get(f"{CONTACTS}/{contact_id}", headers=auth(partner.agent_key)).json()
    assert view["caller_name"] == "Ada Lovelace"
    assert view["summary"] == "Streetlight out since Monday"
    assert "phone" not in view
    assert "address" not in view
    # The whole number, since a random contact id can contain "555".
    assert "215 555 0100" not in str(view)
    assert "pii.decrypt" in audit_actions(engine, tenant.id)


def test_home_agent_sees_all_fields_audited(client, engine, board, tenant):
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    contact_id = post_contact(client, tenant).json()["contact_id"]
    view = client.get(f"{CONTACTS}/{contact_id}", headers=auth(tenant.agent)).json()
    assert view["phone"] == "+1 215 555 0100"
    assert view["address"] == "12 Analytical Way"
    assert "pii.decrypt" in audit_actions(engine, tenant.id)


def test_other_center_gets_404_everywhere(client, engine, board, tenant):
    partner, contact_id = _routed_to(client, engine, board, tenant, "full")
    other = onboard_test_partner(engine, tenant)
    key = auth(other.agent_key)
    assert client.get(f"{CONTACTS}/{contact_id}", headers=key).status_code == 404
    assert client.post(f"{CONTACTS}/{contact_id}/claim", headers=key).status_code == 404
    assert client.post(f"{CONTACTS}/{contact_id}/abandon", headers=key).status_code == 404
    completed = client.post(
        f"{CONTACTS}/{contact_id}/complete", json={"outcome": "resolved"}, headers=key
    )
    assert completed.status_code == 404
    center = f"/api/v1/overflow/centers/{partner.center_id}"
    assert client.get(f"{center}/contacts", headers=key).status_code == 404
    assert client.get(f"{center}/state", headers=key).status_code == 404
    heartbeat = client.post(
        f"{center}/heartbeat", json={"agents_staffed": 1, "agents_available": 1}, headers=key
    )
    assert heartbeat.status_code == 404
    # A partner agent may neither file contacts nor read a tenant's supervisor view.
    assert post_contact_with(client, other.agent_key).status_code == 403
    assert client.get("/api/v1/overflow/status", headers=key).status_code == 403
    # The other partner's own listing does not include the contact either.
    own = client.get(f"/api/v1/overflow/centers/{other.center_id}/contacts", headers=key).json()
    assert own["contacts"] == []
    assert "Ada" not in str(own)


@pytest.mark.parametrize("named", ["no-such-center", "home"])
def test_partner_key_without_partner_center_404(client, engine, tenant, named):
    # Keys created before `hub tenants keys create` checked the center may name one that does
    # not exist, or a tenant's own center.
    center_id = tenant.home if named == "home" else named
    ctx = TenantContext(tenant.id, actor="test")
    with unit_of_work(SystemContext("test key"), engine=engine) as session:
        key = create_api_key(
            session, ctx, roles=[ROLE_PARTNER_AGENT], label="old key", center_id=center_id
        )[1]
    beat(engine, tenant.home, staffed=2, available=2)
    center = f"/api/v1/overflow/centers/{center_id}"

    listed = client.get(f"{center}/contacts", headers=auth(key))
    assert listed.status_code == 404
    assert listed.json()["error"]["message"] == f"center {center_id} not found"
    assert client.get(f"{center}/state", headers=auth(key)).status_code == 404
    heartbeat = client.post(
        f"{center}/heartbeat", json={"agents_staffed": 1, "agents_available": 0}, headers=auth(key)
    )
    assert heartbeat.status_code == 404


def test_other_tenant_gets_404_everywhere(client, engine, board, tenant, other_tenant):
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    contact_id = post_contact(client, tenant).json()["contact_id"]
    key = auth(other_tenant.supervisor)
    assert client.get(f"{CONTACTS}/{contact_id}", headers=key).status_code == 404
    assert client.post(f"{CONTACTS}/{contact_id}/claim", headers=key).status_code == 404
    assert client.post(f"{CONTACTS}/{contact_id}/abandon", headers=key).status_code == 404
    completed = client.post(
        f"{CONTACTS}/{contact_id}/complete", json={"outcome": "resolved"}, headers=key
    )
    assert completed.status_code == 404
    center = f"/api/v1/overflow/centers/{tenant.home}"
    assert client.get(f"{center}/contacts", headers=key).status_code == 404
    assert client.get(f"{center}/state", headers=key).status_code == 404
    heartbeat = client.post(
        f"{center}/heartbeat", json={"agents_staffed": 1, "agents_available": 1}, headers=key
    )
    assert heartbeat.status_code == 404
    status = client.get("/api/v1/overflow/status", headers=key).json()
    assert status["tenant_id"] == other_tenant.id
    assert [c["center_id"] for c in status["home_centers"]] == [other_tenant.home]


def test_claim_complete_updates_request_record(client, engine, board, tenant):
    from open311_support import pothole_form

    created = client.post("/open311/v2/requests.json", data=pothole_form(tenant))
    assert created.status_code == 201
    request_id = created.json()[0]["service_request_id"]

    partner, _ = _routed_to(client, engine, board, tenant, "minimal")
    contact_id = post_contact(client, tenant, request_id=request_id).json()["contact_id"]
    key = auth(partner.agent_key)
    assert client.post(f"{CONTACTS}/{contact_id}/claim", headers=key).status_code == 200
    again = client.post(f"{CONTACTS}/{contact_id}/claim", headers=key)
    assert again.status_code == 409
    done = client.post(
        f"{CONTACTS}/{contact_id}/complete",
        json={"outcome": "request_updated", "request_status": "in_progress", "note": "Crew booked"},
        headers=key,
    )
    assert done.status_code == 200
    assert done.json()["state"] == "completed"

    fetched = client.get(
        f"/open311/v2/requests/{request_id}.json", params={"jurisdiction_id": tenant.jurisdiction}
    )
    assert fetched.status_code == 200
    assert fetched.json()[0]["status"] == "open"
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        from hub.requests.models import ServiceRequest, StatusEvent

        assert session.get(ServiceRequest, request_id).status == "in_progress"
        channels = list(
            session.scalars(select(StatusEvent.channel).where(StatusEvent.request_id == request_id))
        )
        assert "overflow" in channels


def test_abandon_records_wait(client, engine, board, tenant):
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    contact_id = post_contact(client, tenant).json()["contact_id"]
    response = client.post(f"{CONTACTS}/{contact_id}/abandon", headers=auth(tenant.agent))
    assert response.status_code == 200
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        contact = session.get(Contact, contact_id)
        assert contact.state == "abandoned"
        assert contact.wait_seconds is not None


def test_supervisor_status_and_roles(client, engine, board, tenant):
    partner = onboard_test_partner(engine, tenant)
    surge(engine, board, tenant, partner)
    post_contact(client, tenant)
    status = client.get("/api/v1/overflow/status", headers=auth(tenant.supervisor))
    assert status.status_code == 200
    body = status.json()
    assert body["overflow_on"] is True
    assert body["partners"][0]["center_id"] == partner.center_id
    assert body["partners"][0]["routed_last_hour"] == 1
    assert client.get("/api/v1/overflow/status", headers=auth(tenant.agent)).status_code == 403
    assert client.get("/api/v1/overflow/status").status_code == 403
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        row = session.scalars(
            select(OverflowSwitch).where(OverflowSwitch.tenant_id == tenant.id)
        ).one()
        assert row.overflow_on is True


def test_partner_key_own_city_only(client, engine, board, tenant, other_tenant):
    """A center that takes calls for two cities has a key from each. The key of one city
    neither lists nor opens the other city's contacts there."""
    partner, contact_id = _routed_to(client, engine, board, tenant, "standard")
    with unit_of_work(SystemContext("test key"), engine=engine) as session:
        other_key = create_api_key(
            session,
            TenantContext(other_tenant.id, actor="test"),
            roles=[ROLE_PARTNER_AGENT],
            label="partner agent of the other city",
            center_id=partner.center_id,
        )[1]
    listing = f"/api/v1/overflow/centers/{partner.center_id}/contacts"

    assert client.get(f"{CONTACTS}/{contact_id}", headers=auth(other_key)).status_code == 404
    assert client.post(f"{CONTACTS}/{contact_id}/claim", headers=auth(other_key)).status_code == 404
    listed = client.get(listing, headers=auth(other_key))
    assert listed.status_code == 200
    assert contact_id not in listed.text
    assert "Ada" not in listed.text
    # The key of the contact's own city still works it.
    own = client.get(listing, headers=auth(partner.agent_key))
    assert contact_id in own.text
