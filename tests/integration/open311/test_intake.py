"""POST requests through the API: stored fields, validation errors, idempotency, tokens."""

from __future__ import annotations

import math

import pytest
from open311_support import INSIDE, OUTSIDE, error_entries, pothole_form
from sqlalchemy import select

from hub.core.db import get_engine, unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.models import Delivery, ServiceRequest, StatusEvent
from hub.requests.service import link_regional_duplicate

POST = "/open311/v2/requests.json"


def _post(client, form, fmt="json", headers=None):
    return client.post(f"/open311/v2/requests.{fmt}", data=form, headers=headers or {})


def test_post_stores_request_event_delivery_outbox(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    response = _post(client, pothole_form(alpha))
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    request_id = response.json()[0]["service_request_id"]

    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        row = session.get(ServiceRequest, request_id)
        events = session.scalars(select(StatusEvent).where(StatusEvent.request_id == request_id))
        deliveries = session.scalars(select(Delivery).where(Delivery.request_id == request_id))
        outbox = session.scalars(
            select(OutboxMessage).where(OutboxMessage.tenant_id == alpha.id)
        ).all()
        assert row.tenant_id == alpha.id
        assert row.status == "submitted"
        assert row.expected_at is not None
        assert [e.status for e in events] == ["submitted"]
        assert [d.destination for d in deliveries] == ["roads"]
        assert any(m.kwargs.get("request_id") == request_id for m in outbox)
        assert b"Lovelace" not in (row.last_name_enc or b"")
        assert row.email_bidx is not None
        assert row.h3_cell is not None


def test_post_xml_answers_xml(client, tenants_ab):
    alpha, _ = tenants_ab
    response = _post(client, pothole_form(alpha), fmt="xml")
    assert response.status_code == 201
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert b"<service_request_id>" in response.content


def test_location_sensitive_point_is_not_public(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    form = pothole_form(alpha, service_code="graffiti")
    form.pop("attribute[depth]")
    response = _post(client, form)
    assert response.status_code == 201
    request_id = response.json()[0]["service_request_id"]
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        row = session.get(ServiceRequest, request_id)
        assert row.location_enc is not None
        assert (row.lat, row.lon) != INSIDE
        # The resolution-9 cell would place the resident within about 200 m.
        assert row.h3_cell is None

    # With no cell stored, a second report at the same point is not linked as a duplicate.
    again = _post(client, form)
    assert again.status_code == 201
    second_id = again.json()[0]["service_request_id"]
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        second = session.get(ServiceRequest, second_id)
        assert second.duplicate_of is None
        assert second.h3_cell is None


# Each row: form changes, expected status, and a word the description must contain.
BAD_INPUTS = [
    ({"lat": "91", "long": "-75"}, 400, "lat"),
    ({"lat": "40", "long": "-181"}, 400, "long"),
    ({"lat": "nan"}, 400, "finite"),
    ({"long": "inf"}, 400, "finite"),
    ({"lat": "1e999"}, 400, "finite"),
    ({"lat": "north"}, 400, "number"),
    ({"lat": str(OUTSIDE[0]), "long": str(OUTSIDE[1])}, 400, "service area"),
    ({"lat": None, "long": None}, 400, "location"),
    ({"jurisdiction_id": None}, 400, "jurisdiction_id"),
    ({"jurisdiction_id": ""}, 400, "jurisdiction_id"),
    ({"jurisdiction_id": "nowhere.example.org"}, 404, "jurisdiction_id 'nowhere.example.org'"),
    ({"service_code": "no-such-service"}, 404, "service_code 'no-such-service'"),
    ({"service_code": ""}, 400, "service_code"),
    ({"attribute[depth]": None}, 400, "required"),
    ({"attribute[depth]": "deep"}, 400, "number"),
    ({"attribute[surface]": "gravel"}, 400, "allowed"),
    ({"attribute[hazards][]": "fire"}, 400, "allowed"),
    ({"attribute[seen_at]": "2024-01-31T09:00:00"}, 400, "offset"),
    ({"attribute[seen_at]": "yesterday"}, 400, "ISO 8601"),
    ({"attribute[secret_code]": "x"}, 400, "not defined"),
    ({"attribute[info]": "x"}, 400, "not defined"),
    ({"description": "x" * 4001}, 400, "4000"),
    ({"description": "<script>alert(1)</script>"}, 400, "HTML"),
    ({"description": "see <b>here</b>"}, 400, "HTML"),
    ({"media_url": "javascript:alert(1)"}, 400, "http"),
    ({"media_url": "ftp://example.org/a.jpg"}, 400, "http"),
    ({"api_key": "hub_000000000000_wrong"}, 403, "api_key"),
    ({"api_key": None}, 403, "api_key"),
    ({"email": "not-an-email"}, 400, "email"),
]


def test_bad_inputs_get_open311_errors(client, tenants_ab):
    """Every row of the table, in both formats; one server start and database per backend."""
    alpha, _ = tenants_ab
    for changes, status, word in BAD_INPUTS:
        for fmt in ("json", "xml"):
            form = pothole_form(alpha, description="PRIVATE-BODY-MARKER " + "unique text")
            form.update(changes)
            form = {key: value for key, value in form.items() if value is not None}
            response = _post(client, form, fmt=fmt)
            case = f"{changes} as {fmt}"

            assert response.status_code == status, case
            assert b"PRIVATE-BODY-MARKER" not in response.content, case
            assert b"Lovelace" not in response.content, case
            assert b"resident@example.com" not in response.content, case
            # Each row has one problem, so the list has one entry.
            if fmt == "json":
                assert response.headers["content-type"] == "application/json; charset=utf-8"
                errors = response.json()
                assert len(errors) == 1, case
                assert errors[0]["code"] == status, case
                assert word.lower() in errors[0]["description"].lower(), case
            else:
                assert response.headers["content-type"] == "text/xml; charset=utf-8"
                assert b"<errors><error><code>" in response.content, case
                assert response.content.count(b"<error>") == 1, case
                assert word.lower().encode() in response.content.lower(), case


# Values that no error description may contain.
PRIVATE_VALUES = (b"PRIVATE", b"Lovelace", b"resident@example.com", b"555 0100")


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_post_lists_every_problem(client, tenants_ab, fmt):
    alpha, _ = tenants_ab
    form = pothole_form(
        alpha,
        description="PRIVATE-DESCRIPTION " + "x" * 4000,
        first_name="<b>PRIVATE-NAME</b>",
    )
    form.pop("attribute[depth]")
    response = _post(client, form, fmt=fmt)

    assert response.status_code == 400
    assert error_entries(response, fmt) == [
        (400, "description is 4020 characters long; the maximum is 4000"),
        (400, "first_name must be plain text without HTML markup"),
        (400, "attribute[depth] is required for service pothole"),
    ]
    for value in PRIVATE_VALUES:
        assert value not in response.content


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_form_and_field_problems_listed(client, tenants_ab, fmt):
    alpha, _ = tenants_ab
    form = pothole_form(
        alpha,
        lat="PRIVATE-north",
        last_name="<i>Lovelace</i>",
        email="PRIVATE-EMAIL",
        **{
            "attribute[depth]": "PRIVATE-deep",
            "attribute[surface]": "PRIVATE-gravel",
            "attribute[PRIVATE call me]": "x",
        },
    )
    response = _post(client, form, fmt=fmt)

    assert response.status_code == 400
    descriptions = [description for _, description in error_entries(response, fmt)]
    assert descriptions == [
        "lat must be a decimal number",
        "last_name must be plain text without HTML markup",
        "email address is invalid; expected one @ and a domain with a dot, at most 254 characters",
        "an attribute code with spaces, symbols or over 64 characters is not defined for "
        "service pothole; see services/pothole for its attributes",
        "attribute[depth] must be a number",
        "attribute[surface] is not one of the service's allowed keys; use one of asphalt, concrete",
    ]
    for value in PRIVATE_VALUES:
        assert value not in response.content


def test_half_location_is_one_problem(client, tenants_ab):
    alpha, _ = tenants_ab
    form = pothole_form(alpha, long=None, description="see <b>here</b>")
    response = _post(client, form)

    assert response.status_code == 400
    assert error_entries(response, "json") == [
        (400, "lat and long must be given together"),
        (400, "description must be plain text without HTML markup"),
    ]


@pytest.mark.parametrize(
    "changes,status,start",
    [
        ({"service_code": "no-such-service"}, 404, "service_code 'no-such-service' is not"),
        ({"service_code": None}, 400, "service_code is required"),
        ({"jurisdiction_id": "nowhere.example.org"}, 404, "jurisdiction_id 'nowhere"),
        ({"api_key": "hub_000000000000_wrong"}, 403, "api_key"),
    ],
)
def test_blocking_problem_reported_alone(client, tenants_ab, changes, status, start):
    """A problem that stops the request before its fields are checked is the only entry."""
    alpha, _ = tenants_ab
    form = pothole_form(alpha, description="<b>hole</b>", lat="north", **changes)
    form.pop("attribute[depth]")
    response = _post(client, form, fmt="xml")

    assert response.status_code == status
    [(code, description)] = error_entries(response, "xml")
    assert code == status
    assert description.startswith(start)


def test_free_text_service_code_not_repeated(client, tenants_ab):
    alpha, _ = tenants_ab
    response = _post(client, pothole_form(alpha, service_code="fix my street please"))

    assert response.status_code == 404
    description = response.json()[0]["description"]
    assert description.startswith("service_code is not in this jurisdiction's catalog")
    assert "fix my street" not in description


@pytest.mark.parametrize("field", ["account_id", "description"])
def test_xml_noncharacter_rejected(client, tenants_ab, field):
    alpha, _ = tenants_ab
    response = _post(client, pothole_form(alpha, **{field: "acct\ufffe9"}), fmt="xml")
    assert response.status_code == 400
    [(code, description)] = error_entries(response, "xml")
    assert code == 400
    assert description.startswith(f"{field} contains control characters")


def test_oversized_body_is_413(client, tenants_ab):
    alpha, _ = tenants_ab
    form = pothole_form(alpha, description="y" * 2_000_000)
    response = _post(client, form)
    assert response.status_code == 413
    assert response.json()[0]["code"] == 413
    assert b"yyyy" not in response.content


def test_valid_attributes_accepted(client, tenants_ab):
    alpha, _ = tenants_ab
    form = pothole_form(alpha)
    form.update(
        {
            "attribute[surface]": "asphalt",
            "attribute[seen_at]": "2024-01-31T09:00:00-05:00",
            "attribute[notes]": "Near the school",
        }
    )
    form["attribute[hazards][]"] = ["water", "traffic"]
    response = client.post(POST, data=form)
    assert response.status_code == 201


def test_utf8_four_byte_round_trip(client, tenants_ab):
    alpha, _ = tenants_ab
    text = "Bache enorme 🕳️🚧 en la calle 𝔸𝕓𝕔 — ñandú 漢字"
    response = _post(client, pothole_form(alpha, description=text, first_name="Zoë 😀"))
    assert response.status_code == 201
    request_id = response.json()[0]["service_request_id"]
    staff = client.get(
        f"/api/v1/tenants/{alpha.id}/requests/{request_id}",
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )
    assert staff.status_code == 200
    assert staff.json()["description"].encode("utf-8") == text.encode("utf-8")
    assert staff.json()["first_name"] == "Zoë 😀"


def test_idempotency_key_replays_same_body(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    headers = {"Idempotency-Key": "key-123"}
    form = pothole_form(alpha, account_id="acct-replay-9")
    first = _post(client, form, headers=headers)
    second = _post(client, form, headers=headers)
    assert first.status_code == 201
    assert second.status_code == 201
    assert first.json() == second.json()
    assert second.json()[0]["account_id"] == "acct-replay-9"
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        count = len(
            session.scalars(
                select(ServiceRequest).where(ServiceRequest.tenant_id == alpha.id)
            ).all()
        )
    assert count == 1


def test_idempotency_key_with_other_body_conflicts(client, tenants_ab):
    alpha, _ = tenants_ab
    headers = {"Idempotency-Key": "key-456"}
    assert _post(client, pothole_form(alpha), headers=headers).status_code == 201
    other = _post(client, pothole_form(alpha, description="Another hole"), headers=headers)
    assert other.status_code == 409
    assert other.json()[0]["code"] == 409
    assert b"Another hole" not in other.content


def test_idempotency_key_is_per_api_key(client, tenants_ab):
    alpha, beta = tenants_ab
    headers = {"Idempotency-Key": "shared-key"}
    first = _post(client, pothole_form(alpha), headers=headers)
    second = _post(client, pothole_form(beta), headers=headers)
    assert first.status_code == 201
    assert second.status_code == 201
    assert first.json()[0]["service_request_id"] != second.json()[0]["service_request_id"]


def test_degraded_intake_answers_token(client, tenants_ab):
    alpha, beta = tenants_ab
    client.app.state.open311_degraded = lambda: True
    response = _post(client, pothole_form(alpha))
    assert response.status_code == 201
    body = response.json()[0]
    assert "service_request_id" not in body
    token = body["token"]

    resolved = client.get(
        f"/open311/v2/tokens/{token}.json", params={"jurisdiction_id": alpha.jurisdiction}
    )
    assert resolved.status_code == 200
    assert resolved.json()[0]["token"] == token
    assert resolved.json()[0]["service_request_id"]

    other = client.get(
        f"/open311/v2/tokens/{token}.xml", params={"jurisdiction_id": beta.jurisdiction}
    )
    assert other.status_code == 404
    assert b"<errors>" in other.content


def test_duplicate_within_radius_is_linked(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    first = _post(client, pothole_form(alpha)).json()[0]["service_request_id"]
    lat, lon = INSIDE
    near = pothole_form(alpha, lat=str(lat + 0.0001), long=str(lon))
    far = pothole_form(alpha, lat=str(lat + 0.01), long=str(lon))
    near_id = _post(client, near).json()[0]["service_request_id"]
    far_id = _post(client, far).json()[0]["service_request_id"]
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        assert session.get(ServiceRequest, near_id).duplicate_of == first
        assert session.get(ServiceRequest, far_id).duplicate_of is None
    assert math.isfinite(lat)


def test_duplicate_across_region_is_linked(client, tenants_ab, hub_db):
    alpha, beta = tenants_ab
    first = _post(client, pothole_form(alpha)).json()[0]["service_request_id"]
    lat, lon = INSIDE
    across = _post(client, pothole_form(beta, lat=str(lat + 0.0001), long=str(lon)))
    across_id = across.json()[0]["service_request_id"]
    engine = get_engine(hub_db)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        # Intake links duplicates within the tenant only; the routing task looks region-wide.
        assert session.get(ServiceRequest, across_id).duplicate_of is None
    ctx = TenantContext(beta.id, actor="test")
    assert link_regional_duplicate(ctx, across_id, engine=engine) == first
    # The earlier request is not linked to the later one, and a second run changes nothing.
    alpha_ctx = TenantContext(alpha.id, actor="test")
    assert link_regional_duplicate(alpha_ctx, first, engine=engine) is None
    assert link_regional_duplicate(ctx, across_id, engine=engine) is None
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        assert session.get(ServiceRequest, across_id).duplicate_of == first
        assert session.get(ServiceRequest, first).duplicate_of is None


def _raw_post(client, body: bytes):
    return client.post(
        POST, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )


def test_raw_utf8_body_round_trips(client, tenants_ab):
    alpha, _ = tenants_ab
    form = pothole_form(alpha)
    form.pop("description")
    body = "&".join(f"{k}={v}" for k, v in form.items()).replace("+", "%2B")
    response = _raw_post(client, (body + "&description=hole 😀 𝔸 ñ").encode("utf-8"))
    assert response.status_code == 201
    request_id = response.json()[0]["service_request_id"]
    staff = client.get(
        f"/api/v1/tenants/{alpha.id}/requests/{request_id}",
        headers={"Authorization": f"Bearer {alpha.staff}"},
    )
    assert staff.json()["description"] == "hole 😀 𝔸 ñ"


@pytest.mark.parametrize("tail", [b"&description=%FF%FE", b"&description=\xff\xfe", b"&x=1" * 1001])
def test_invalid_form_bodies_are_400(client, tenants_ab, tail):
    alpha, _ = tenants_ab
    body = f"jurisdiction_id={alpha.jurisdiction}&service_code=pothole".encode() + tail
    response = _raw_post(client, body)
    assert response.status_code == 400
    assert response.json()[0]["code"] == 400
