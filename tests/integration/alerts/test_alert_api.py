"""The alerts JSON API, opt-in endpoints and public outputs, each with its cross-tenant case."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alerts_support import BOTH_CITIES, NYC_POINT, add_tenant, backdate_expiry
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import select

from hub.alerts.cap.mapping import to_dict
from hub.alerts.cells import place_cells
from hub.core.db import dispose_engines, get_engine, unit_of_work
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, ROLE_OPEN311, TenantContext
from tenants.keys import create_api_key, forget_cached_keys
from tenants.registry import invalidate_cache

# The receivers listen on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")


def _reset() -> None:
    reset_settings_cache()
    dispose_engines()
    invalidate_cache()
    forget_cached_keys()


@pytest.fixture
def hub_url(db_url: str) -> Iterator[str]:
    saved = os.environ.get("HUB_DATABASE_URL")
    os.environ["HUB_DATABASE_URL"] = db_url
    _reset()
    yield db_url
    if saved is None:
        os.environ.pop("HUB_DATABASE_URL", None)
    else:
        os.environ["HUB_DATABASE_URL"] = saved
    _reset()


def key(engine, tenant_id: str, role: str, label: str, holder: str | None = None) -> str:
    with unit_of_work(TenantContext(tenant_id, actor="test"), engine=engine) as session:
        _, raw = create_api_key(
            session,
            TenantContext(tenant_id, actor="test"),
            roles=[role],
            label=label,
            holder=holder,
        )
    return raw


@pytest.fixture
def setup(hub_url: str) -> Iterator[dict]:
    from hub.api.app import create_app

    engine = get_engine(hub_url)
    a = add_tenant(engine)
    b = add_tenant(engine)
    keys = {
        "a_em1": key(engine, a, ROLE_EMERGENCY_MANAGER, "em1"),
        "a_em2": key(engine, a, ROLE_EMERGENCY_MANAGER, "em2"),
        "a_app": key(engine, a, ROLE_OPEN311, "app"),
        "b_em": key(engine, b, ROLE_EMERGENCY_MANAGER, "em"),
    }
    with TestClient(create_app(start_relay=False)) as client:
        yield {"client": client, "a": a, "b": b, "keys": keys}


def auth(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def alert_document(identifier: str) -> dict:
    from alerts_support import cap_alert

    return to_dict(cap_alert(identifier, ring=BOTH_CITIES))


def test_compose_approve_send(setup) -> None:
    client, keys = setup["client"], setup["keys"]
    created = client.post(
        "/api/v1/alerts", json=alert_document("API-1"), headers=auth(keys["a_em1"])
    )
    assert created.status_code == 201, created.text
    alert_id = created.json()[0]["id"]

    too_early = client.post(f"/api/v1/alerts/{alert_id}/send", headers=auth(keys["a_em1"]))
    assert too_early.status_code == 403
    approved = client.post(f"/api/v1/alerts/{alert_id}/approve", headers=auth(keys["a_em2"]))
    assert approved.json()["state"] == "approved"
    sent = client.post(f"/api/v1/alerts/{alert_id}/send", headers=auth(keys["a_em1"]))
    assert sent.status_code == 200

    status = client.get(f"/api/v1/alerts/{alert_id}", headers=auth(keys["a_em1"]))
    assert status.json()[0]["state"] == "sent"  # nobody subscribed, so nothing is pending
    cap = client.get(f"/alerts/{setup['a']}/{alert_id}.xml")
    assert cap.status_code == 200
    assert etree.fromstring(cap.content).tag.endswith("alert")
    feed = client.get(f"/alerts/{setup['a']}/feed.atom")
    assert alert_id in feed.text
    listed = client.get(f"/alerts/{setup['a']}/active.json")
    assert [a["id"] for a in listed.json()] == [alert_id]


def test_two_keys_one_holder(setup, hub_url) -> None:
    client, tenant = setup["client"], setup["a"]
    engine = get_engine(hub_url)
    desk = key(engine, tenant, ROLE_EMERGENCY_MANAGER, "OEM desk", holder="alice")
    laptop = key(engine, tenant, ROLE_EMERGENCY_MANAGER, "alice's laptop", holder="alice")
    created = client.post("/api/v1/alerts", json=alert_document("API-HOLDER"), headers=auth(desk))
    alert_id = created.json()[0]["id"]

    approved = client.post(f"/api/v1/alerts/{alert_id}/approve", headers=auth(laptop))

    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "draft"
    assert approved.json()["approval"]["outcome"] == "awaiting_second_approver"
    assert "other than alice must approve it" in approved.json()["approval"]["message"]


def test_expired_send_rejected_again(setup, hub_url) -> None:
    client, keys = setup["client"], setup["keys"]
    created = client.post(
        "/api/v1/alerts", json=alert_document("API-OLD"), headers=auth(keys["a_em1"])
    )
    alert_id = created.json()[0]["id"]
    client.post(f"/api/v1/alerts/{alert_id}/approve", headers=auth(keys["a_em2"]))
    backdate_expiry(get_engine(hub_url), setup["a"], alert_id)

    for attempt in (1, 2):
        sent = client.post(f"/api/v1/alerts/{alert_id}/send", headers=auth(keys["a_em1"]))
        assert sent.status_code == 400, (attempt, sent.text)
        assert "expired at" in sent.text, attempt
        assert "nothing was sent" in sent.text, attempt
    status = client.get(f"/api/v1/alerts/{alert_id}", headers=auth(keys["a_em1"]))
    assert status.json()[0]["state"] == "expired"


def test_invalid_composition_names_element(setup) -> None:
    document = alert_document("API-BAD")
    document["info"][0]["area"][0]["polygon"] = ["40,-74 40,-73 41,-73 41,-74"]
    response = setup["client"].post(
        "/api/v1/alerts", json=document, headers=auth(setup["keys"]["a_em1"])
    )
    assert response.status_code == 400
    assert "polygon is not closed" in response.text


def test_other_tenant_alert_not_found(setup) -> None:
    client, keys = setup["client"], setup["keys"]
    created = client.post(
        "/api/v1/alerts", json=alert_document("API-2"), headers=auth(keys["a_em1"])
    )
    alert_id = created.json()[0]["id"]
    for method, path in (
        ("post", f"/api/v1/alerts/{alert_id}/approve"),
        ("post", f"/api/v1/alerts/{alert_id}/send"),
        ("get", f"/api/v1/alerts/{alert_id}"),
        ("get", f"/api/v1/alerts/{alert_id}/preview"),
    ):
        response = getattr(client, method)(path, headers=auth(keys["b_em"]))
        assert response.status_code == 404, (path, response.text)
    listed = client.get("/api/v1/alerts", headers=auth(keys["b_em"]))
    assert listed.json() == []
    wrong_tenant = client.get(f"/alerts/{setup['b']}/{alert_id}.xml")
    assert wrong_tenant.status_code == 404


def test_city_app_cannot_compose(setup) -> None:
    response = setup["client"].post(
        "/api/v1/alerts", json=alert_document("API-3"), headers=auth(setup["keys"]["a_app"])
    )
    assert response.status_code == 403


def test_subscribe_and_unsubscribe(setup) -> None:
    client, keys = setup["client"], setup["keys"]
    body = {
        "places": [list(NYC_POINT)],
        "languages": ["es", "en"],
        "channels": {"email": "vecina@example.org"},
        "consent_at": datetime.now(UTC).isoformat(),
    }
    created = client.post("/api/v1/alert-subscriptions", json=body, headers=auth(keys["a_app"]))
    assert created.status_code == 201, created.text
    token = created.json()["unsubscribe_token"]
    assert "vecina" not in created.text

    other = client.post(f"/alerts/{setup['b']}/unsubscribe/{token}")
    assert other.status_code == 404
    done = client.post(f"/alerts/{setup['a']}/unsubscribe/{token}")
    assert done.status_code == 200


def test_repeated_opt_in_updates_subscriber(setup, hub_url) -> None:
    """A city app that sends a resident's choice again updates the one subscriber, and turns
    it on again after the resident unsubscribed."""
    from hub.alerts import models as m

    client, keys, tenant = setup["client"], setup["keys"], setup["a"]
    email = f"vecino-{uuid.uuid4().hex[:8]}@example.org"
    body = {
        "places": [list(NYC_POINT)],
        "languages": ["es", "en"],
        "channels": {"email": email},
        "consent_at": datetime.now(UTC).isoformat(),
    }
    created = client.post("/api/v1/alert-subscriptions", json=body, headers=auth(keys["a_app"]))
    assert created.status_code == 201, created.text
    assert created.json()["outcome"] == "created"
    token = created.json()["unsubscribe_token"]
    assert client.post(f"/alerts/{tenant}/unsubscribe/{token}").status_code == 200

    moved = (NYC_POINT[0] + 0.05, NYC_POINT[1])
    again = {**body, "places": [list(moved)], "languages": ["en"], "test_opt_in": True}
    updated = client.post("/api/v1/alert-subscriptions", json=again, headers=auth(keys["a_app"]))

    assert updated.status_code == 200, updated.text
    assert updated.json() == {
        "subscriber_id": created.json()["subscriber_id"],
        "unsubscribe_token": token,
        "outcome": "updated",
    }
    subscriber_id = created.json()["subscriber_id"]
    engine = get_engine(hub_url)
    with unit_of_work(TenantContext(tenant, actor="test"), engine=engine) as session:
        subscriber = session.get(m.Subscriber, subscriber_id)
        channels = session.scalars(
            select(m.SubscriberChannel).where(m.SubscriberChannel.subscriber_id == subscriber_id)
        ).all()
        cells = session.scalars(
            select(m.SubscriberCell.cell_fine).where(
                m.SubscriberCell.subscriber_id == subscriber_id
            )
        ).all()
    assert subscriber.active
    assert subscriber.unsubscribed_at is None
    assert subscriber.languages == ["en"]
    assert subscriber.test_opt_in
    assert [channel.active for channel in channels] == [True]
    assert cells == [place_cells(*moved)[0]]


def test_place_in_geojson_order_rejected(setup) -> None:
    """A place given longitude first lies outside the city: 400 that names the order, for a
    new opt-in and for an update of a stored one."""
    client, keys = setup["client"], setup["keys"]
    body = {
        "places": [list(NYC_POINT)],
        "channels": {"email": f"orden-{uuid.uuid4().hex[:8]}@example.org"},
        "consent_at": datetime.now(UTC).isoformat(),
    }
    swapped = {**body, "places": [list(NYC_POINT), [NYC_POINT[1], NYC_POINT[0]]]}

    new = client.post("/api/v1/alert-subscriptions", json=swapped, headers=auth(keys["a_app"]))
    created = client.post("/api/v1/alert-subscriptions", json=body, headers=auth(keys["a_app"]))
    update = client.post("/api/v1/alert-subscriptions", json=swapped, headers=auth(keys["a_app"]))

    assert new.status_code == 400
    assert "place 2 is outside the service area" in new.text
    assert "[latitude, longitude]" in new.text
    assert str(NYC_POINT[1]) not in new.text
    assert created.status_code == 201, created.text
    assert update.status_code == 400


def test_bad_address_rejected_without_echo(setup) -> None:
    body = {
        "places": [list(NYC_POINT)],
        "channels": {"sms": "not-a-phone-555"},
        "consent_at": datetime.now(UTC).isoformat(),
    }
    response = setup["client"].post(
        "/api/v1/alert-subscriptions", json=body, headers=auth(setup["keys"]["a_app"])
    )
    assert response.status_code == 400
    assert "not-a-phone-555" not in response.text


def test_vapid_key_per_tenant(setup) -> None:
    client = setup["client"]
    first = client.get(f"/alerts/{setup['a']}/vapid-public-key").json()["public_key"]
    second = client.get(f"/alerts/{setup['b']}/vapid-public-key").json()["public_key"]
    assert len(first) == 87
    assert first != second


def test_unsubscribe_link_in_messages(setup, hub_url) -> None:
    from alerts_support import HttpReceiver, add_resident, cap_alert, manager
    from open311_support import northeast_manifest
    from sqlalchemy import update

    from hub.alerts import fanout, workflow
    from hub.alerts import models as m
    from tenants.models import Tenant

    client, tenant = setup["client"], setup["a"]
    engine = get_engine(hub_url)
    receiver = HttpReceiver().start()
    try:
        with unit_of_work(TenantContext(tenant, actor="test"), engine=engine) as session:
            session.execute(
                update(Tenant)
                .where(Tenant.id == tenant)
                .values(
                    manifest=northeast_manifest(
                        tenant, alerts={"public_base_url": "http://testserver"}
                    )
                )
            )
        add_resident(engine, tenant, NYC_POINT, {"webhook": receiver.url("/r")})
        [row] = workflow.compose(engine, manager(tenant), cap_alert("LINK-1"))
        workflow.approve(engine, manager(tenant, "em2"), row["id"])
        workflow.send(engine, manager(tenant), row["id"])
        fanout.deliver_batch(row["id"], 0, tenant, engine=engine)
        [entry] = receiver.received.bodies.values()
    finally:
        receiver.stop()

    link = entry["body"]["unsubscribe_url"]
    path = link.removeprefix("http://testserver")
    page = client.get(path)
    assert page.status_code == 200
    assert '<form method="post">' in page.text
    done = client.post(path)
    assert done.status_code == 200
    with unit_of_work(TenantContext(tenant, actor="test"), engine=engine) as session:
        subscriber = session.scalar(select(m.Subscriber))
    assert subscriber.active is False


def test_review_single_approved(setup) -> None:
    from alerts_support import cap_alert

    client, keys = setup["client"], setup["keys"]
    document = to_dict(cap_alert("API-REV", urgency="Immediate", severity="Extreme"))
    created = client.post("/api/v1/alerts", json=document, headers=auth(keys["a_em1"]))
    alert_id = created.json()[0]["id"]
    approved = client.post(f"/api/v1/alerts/{alert_id}/approve", headers=auth(keys["a_em1"]))
    assert approved.json()["awaiting_review"] is True

    waiting = client.get("/api/v1/alerts?awaiting_review=true", headers=auth(keys["a_em1"]))
    assert [a["id"] for a in waiting.json()] == [alert_id]
    path = f"/api/v1/alerts/{alert_id}/review"
    same = client.post(path, json={"note": "fine"}, headers=auth(keys["a_em1"]))
    assert same.status_code == 403, same.text
    assert "another emergency manager" in same.text
    too_long = client.post(path, json={"note": "x" * 1001}, headers=auth(keys["a_em2"]))
    assert too_long.status_code == 400, too_long.text
    assert "note" in too_long.text
    other_tenant = client.post(path, headers=auth(keys["b_em"]))
    assert other_tenant.status_code == 404

    reviewed = client.post(path, json={"note": "fine"}, headers=auth(keys["a_em2"]))
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["review_note"] == "fine"
    again = client.post(path, headers=auth(keys["a_em2"]))
    assert again.status_code == 409
    assert "already reviewed" in again.text
    waiting = client.get("/api/v1/alerts?awaiting_review=true", headers=auth(keys["a_em1"]))
    assert waiting.json() == []
