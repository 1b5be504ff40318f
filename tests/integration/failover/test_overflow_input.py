"""Input checks of the overflow API: free text, the tenant's service groups and languages,
linked service requests, and repeated completion."""

from __future__ import annotations

import json
import uuid

import pytest
from overflow_support import auth, beat, onboard_overflow_tenant

from failover.models import Contact
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext

CONTACTS = "/api/v1/overflow/contacts"


def post_contact(client, tenant, key=None, **overrides):
    body = {"channel": "call", "language": "en", "service_group": "streets"}
    body.update(overrides)
    return client.post(CONTACTS, json=body, headers=auth(key or tenant.agent))


def error_of(response):
    return response.json()["error"]


def home_ready(engine, board, tenant):
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()


@pytest.mark.parametrize(
    "field",
    ["service_group", "language", "channel", "external_id", "request_id", "caller_name", "summary"],
)
def test_nul_in_contact_field_rejected(client, engine, board, tenant, field):
    home_ready(engine, board, tenant)
    values = {"service_group": "streets", "language": "en", "channel": "call"}
    values[field] = values.get(field, "ab") + "\u0000x"
    response = post_contact(client, tenant, **values)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid"
    assert field in error["message"]
    assert "\u0000" not in response.text


def test_long_language_tag_rejected(client, engine, board, tenant):
    # A well-formed tag longer than the column, whose primary subtag the tenant serves.
    home_ready(engine, board, tenant)
    response = post_contact(client, tenant, language="en-abcdefgh-abcdefgh")
    assert response.status_code == 400
    assert "language" in error_of(response)["message"]


def test_long_channel_not_echoed(client, engine, board, tenant):
    home_ready(engine, board, tenant)
    response = post_contact(client, tenant, channel="x" * 5000)
    assert response.status_code == 400
    assert "channel" in error_of(response)["message"]
    assert "x" * 100 not in response.text


@pytest.mark.parametrize(
    "path",
    [f"{CONTACTS}/a%00b", f"{CONTACTS}/a%00b/claim", f"{CONTACTS}/a%00b/abandon"],
)
def test_nul_in_contact_id_rejected(client, engine, board, tenant, path):
    home_ready(engine, board, tenant)
    method = client.get if path.count("/") == 5 else client.post
    response = method(path, headers=auth(tenant.supervisor))
    assert response.status_code == 400
    assert "contact_id" in error_of(response)["message"]


@pytest.mark.parametrize("suffix", ["heartbeat", "state", "contacts"])
def test_nul_in_center_id_rejected(client, engine, board, tenant, suffix):
    home_ready(engine, board, tenant)
    path = f"/api/v1/overflow/centers/a%00b/{suffix}"
    if suffix == "heartbeat":
        body = {"agents_staffed": 2, "agents_available": 1}
        response = client.post(path, json=body, headers=auth(tenant.supervisor))
    else:
        response = client.get(path, headers=auth(tenant.supervisor))
    assert response.status_code == 400
    assert "center_id" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [("service_group", "Snow", "sanitation, streets"), ("language", "fr", "en, es")],
)
def test_value_tenant_lacks_rejected(client, engine, board, tenant, field, value, allowed):
    home_ready(engine, board, tenant)
    response = post_contact(client, tenant, **{field: value})
    assert response.status_code == 400
    message = error_of(response)["message"]
    assert f"{field} {value!r}" in message
    assert allowed in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"channel": ', "the request body is not valid JSON (EOF while parsing a value at line 1"),
        ('["call"]', "the request body is invalid: Input should be an object"),
        ('{"channel": "call", "language": "en"}', "service_group is missing"),
        (
            '{"channel": 7, "language": "en", "service_group": "streets"}',
            "channel is invalid: Input should be a valid string",
        ),
    ],
)
def test_bad_json_body_explained(client, engine, board, tenant, body, expected):
    home_ready(engine, board, tenant)
    headers = {**auth(tenant.agent), "content-type": "application/json"}
    response = client.post(CONTACTS, content=body, headers=headers)

    assert response.status_code == 400
    assert expected in error_of(response)["message"]


def test_tenant_newer_than_board_checked(client, engine, board):
    board.refresh()
    late = onboard_overflow_tenant(engine, f"ovl-{uuid.uuid4().hex[:8]}")
    assert late.id not in board.tenants
    response = post_contact(client, late, language="fr")
    assert response.status_code == 400
    assert "language 'fr'" in error_of(response)["message"]
    assert late.id in board.tenants


def test_regional_language_tag_accepted(client, engine, board, tenant):
    home_ready(engine, board, tenant)
    assert post_contact(client, tenant, language="es-US").status_code == 201


@pytest.mark.parametrize("language", ["EN", "En-US", "es-us", "ES-MX"])
def test_language_tag_any_case_accepted(client, engine, board, tenant, language):
    home_ready(engine, board, tenant)
    response = post_contact(client, tenant, language=language)
    assert response.status_code == 201, response.json()


def test_upper_case_tenant_languages_served(client, engine, board):
    # The services keep their names under the lower-case keys en and es.
    tenant = onboard_overflow_tenant(engine, f"ovu-{uuid.uuid4().hex[:8]}", languages=["EN", "ES"])
    home_ready(engine, board, tenant)
    assert post_contact(client, tenant, language="es-us").status_code == 201
    response = post_contact(client, tenant, language="fr")
    assert response.status_code == 400
    assert "use one of EN, ES" in error_of(response)["message"]


def test_any_group_without_center_skills(client, engine, board, tenant):
    from tenants.models import Tenant

    with unit_of_work(SystemContext("test change"), engine=engine) as session:
        row = session.get(Tenant, tenant.id)
        manifest = json.loads(json.dumps(row.manifest))
        manifest["overflow"]["centers"][0]["skills"] = []
        row.manifest = manifest
    home_ready(engine, board, tenant)
    assert post_contact(client, tenant, service_group="Snow").status_code == 201


def test_unknown_request_id_rejected(client, engine, board, tenant):
    home_ready(engine, board, tenant)
    response = post_contact(client, tenant, request_id="NOPE-1")
    assert response.status_code == 400
    error = error_of(response)
    assert "request_id 'NOPE-1'" in error["message"]
    assert "no service request" in error["message"]


def test_other_tenants_request_id_rejected(client, engine, board, tenant, other_tenant):
    from open311_support import pothole_form

    created = client.post("/open311/v2/requests.json", data=pothole_form(other_tenant))
    assert created.status_code == 201
    foreign = created.json()[0]["service_request_id"]
    home_ready(engine, board, tenant)
    assert post_contact(client, tenant, request_id=foreign).status_code == 400


def test_known_request_id_accepted(client, engine, board, tenant):
    from open311_support import pothole_form

    created = client.post("/open311/v2/requests.json", data=pothole_form(tenant))
    request_id = created.json()[0]["service_request_id"]
    home_ready(engine, board, tenant)
    response = post_contact(client, tenant, request_id=request_id)
    assert response.status_code == 201


def claimed_contact(client, engine, board, tenant, **fields):
    home_ready(engine, board, tenant)
    contact_id = post_contact(client, tenant, **fields).json()["contact_id"]
    claimed = client.post(f"{CONTACTS}/{contact_id}/claim", headers=auth(tenant.agent))
    assert claimed.status_code == 200
    return contact_id


def complete(client, tenant, contact_id, **body):
    return client.post(f"{CONTACTS}/{contact_id}/complete", json=body, headers=auth(tenant.agent))


def test_repeated_complete_same_outcome_idempotent(client, engine, board, tenant):
    contact_id = claimed_contact(client, engine, board, tenant)
    first = complete(client, tenant, contact_id, outcome="resolved")
    again = complete(client, tenant, contact_id, outcome="resolved")
    assert first.status_code == 200
    assert again.status_code == 200
    assert again.json() == first.json()


def test_repeated_complete_other_outcome_conflicts(client, engine, board, tenant):
    contact_id = claimed_contact(client, engine, board, tenant)
    assert complete(client, tenant, contact_id, outcome="resolved").status_code == 200
    response = complete(client, tenant, contact_id, outcome="callback")
    assert response.status_code == 409
    message = error_of(response)["message"]
    assert "already completed with outcome 'resolved'" in message
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        assert session.get(Contact, contact_id).outcome == "resolved"


def test_complete_checks_request_status(client, engine, board, tenant):
    contact_id = claimed_contact(client, engine, board, tenant)
    response = complete(client, tenant, contact_id, outcome="resolved", request_status="done\0")
    assert response.status_code == 400
    assert "request_status" in error_of(response)["message"]
    assert "submitted, acknowledged" in error_of(response)["message"]


@pytest.mark.parametrize("field", ["note", "resolution"])
def test_complete_rejects_detail_without_status(client, engine, board, tenant, field):
    contact_id = claimed_contact(client, engine, board, tenant)
    response = complete(client, tenant, contact_id, outcome="resolved", **{field: "fixed"})
    assert response.status_code == 400
    assert field in error_of(response)["message"]
    assert "request_status" in error_of(response)["message"]


def test_complete_for_vanished_request_explains(client, engine, board, tenant):
    from open311_support import pothole_form

    from hub.requests.models import ServiceRequest

    created = client.post("/open311/v2/requests.json", data=pothole_form(tenant))
    request_id = created.json()[0]["service_request_id"]
    contact_id = claimed_contact(client, engine, board, tenant, request_id=request_id)
    # The request leaves the tenant after the contact was stored, as a transfer or purge does.
    with unit_of_work(SystemContext("test change"), engine=engine) as session:
        session.delete(session.get(ServiceRequest, request_id))
    response = complete(
        client, tenant, contact_id, outcome="request_updated", request_status="in_progress"
    )
    assert response.status_code == 409
    message = error_of(response)["message"]
    assert f"request_id {request_id}" in message
    assert f"no service request of tenant {tenant.id}" in message
