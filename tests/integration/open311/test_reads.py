"""GET endpoints: services, definitions, requests with every filter, one request, discovery.

Responses are checked against the official Open311 GeoReport v2 JSON Schemas.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from defusedxml.ElementTree import fromstring
from jsonschema import Draft4Validator
from open311_support import error_entries, manifest_data, pothole_form
from referencing import Registry, Resource
from sqlalchemy import update

from hub.core.clock import utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext
from hub.requests.models import ServiceRequest
from tenants.manifest import parse_manifest
from tenants.models import Tenant
from tenants.onboarding import onboard
from tenants.registry import invalidate_cache


@pytest.fixture(scope="module")
def schemas(shared_data):
    folder = shared_data / "open311" / "schema-validation"
    loaded = {
        name: json.loads((folder / name).read_text())
        for name in ("request.json", "requests.json", "service.json", "services.json")
    }
    loaded["service-definition.json"] = json.loads((folder / "service-definition.json").read_text())
    registry = Registry().with_resources(
        (name, Resource.from_contents(body, default_specification=_draft4()))
        for name, body in loaded.items()
    )
    return {name: Draft4Validator(body, registry=registry) for name, body in loaded.items()}


def _draft4():
    from referencing.jsonschema import DRAFT4

    return DRAFT4


def _file(client, tenant, **overrides):
    response = client.post("/open311/v2/requests.json", data=pothole_form(tenant, **overrides))
    assert response.status_code == 201
    return response.json()[0]["service_request_id"]


def _get(client, path, tenant, **params):
    return client.get(
        f"/open311/v2/{path}", params={"jurisdiction_id": tenant.jurisdiction, **params}
    )


def _age(hub_db, request_id, days):
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == request_id)
            .values(requested_at=utcnow() - timedelta(days=days))
        )


def test_services_match_schema(client, tenants_ab, schemas):
    alpha, _ = tenants_ab
    response = _get(client, "services.json", alpha)
    assert response.status_code == 200
    schemas["services.json"].validate(response.json())
    codes = {service["service_code"] for service in response.json()}
    assert codes == {"pothole", "graffiti", "encampment"}


def test_services_in_spanish(client, tenants_ab):
    alpha, _ = tenants_ab
    response = _get(client, "services.json", alpha, locale="es")
    names = {service["service_code"]: service["service_name"] for service in response.json()}
    assert names["pothole"] == "Bache"


def test_service_definition_matches_schema(client, tenants_ab, schemas):
    alpha, _ = tenants_ab
    response = _get(client, "services/pothole.json", alpha)
    assert response.status_code == 200
    schemas["service-definition.json"].validate(response.json())
    codes = [attribute["code"] for attribute in response.json()["attributes"]]
    assert codes == ["depth", "surface", "hazards", "seen_at", "notes", "info"]


def test_service_definition_xml(client, tenants_ab):
    alpha, _ = tenants_ab
    response = _get(client, "services/pothole.xml", alpha)
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert b"<service_definition><service_code>pothole</service_code>" in response.content
    assert b"<values><value><key>asphalt</key>" in response.content


def test_requests_match_schema(client, tenants_ab, schemas):
    alpha, _ = tenants_ab
    _file(client, alpha)
    response = _get(client, "requests.json", alpha)
    assert response.status_code == 200
    schemas["requests.json"].validate(response.json())
    for entry in response.json():
        schemas["request.json"].validate(entry)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_single_request_matches_list(client, tenants_ab, hub_db, fmt):
    # On PostgreSQL one request is read in one round trip without the ORM, and the list
    # through a session: both must show the same entry, closed fields and all.
    alpha, _ = tenants_ab
    request_id = _file(client, alpha, address_id="A-17", zipcode="02108")
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == request_id)
            .values(status="closed", resolution="fixed", closed_at=utcnow())
        )
    single = _get(client, f"requests/{request_id}.{fmt}", alpha)
    listed = _get(client, f"requests.{fmt}", alpha, service_request_id=request_id)
    assert single.status_code == listed.status_code == 200
    assert single.content == listed.content
    assert b"A-17" not in single.content
    assert b"02108" in single.content


def test_agency_responsible_is_agency_name(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    entry = _get(client, f"requests/{request_id}.json", alpha).json()[0]
    assert entry["agency_responsible"] == "Roads department"


def test_agency_responsible_after_agency_renamed(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    region = "region-" + alpha.id.removeprefix("alpha-")
    data = manifest_data(alpha.id, alpha.jurisdiction, region=region)
    data["agencies"][0]["code"] = "streets"
    data["routing"]["default"] = "streets"
    for service in data["services"]:
        if service.get("agency") == "roads":
            service["agency"] = "streets"
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        onboard(session, parse_manifest(data), actor="test")

    entry = _get(client, f"requests/{request_id}.json", alpha).json()[0]

    assert entry["agency_responsible"] == "Roads department"


def test_public_view_has_no_personal_data(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    for fmt in ("json", "xml"):
        response = _get(client, f"requests/{request_id}.{fmt}", alpha, extensions="true")
        assert response.status_code == 200
        for secret in (b"Lovelace", b"resident@example.com", b"555", b"Deep pothole"):
            assert secret not in response.content


PARCEL = "PARCEL-0402-7781000"


@pytest.mark.parametrize("service_code", ["pothole", "encampment"])
def test_address_id_withheld_from_reads(client, tenants_ab, hub_db, service_code):
    # An address id such as a parcel number leads to the home as the address text does, so
    # reads never show it, for a pothole as for a location-sensitive service.
    alpha, _ = tenants_ab
    form = pothole_form(
        alpha, service_code=service_code, address_id=PARCEL, address_string="8 Birch Rd Apt 2"
    )
    if service_code == "encampment":
        form = {k: v for k, v in form.items() if k not in ("lat", "long", "attribute[depth]")}
    posted = client.post("/open311/v2/requests.json", data=form)
    assert posted.status_code == 201
    request_id = posted.json()[0]["service_request_id"]

    single = _get(client, f"requests/{request_id}.json", alpha).json()[0]
    assert single["address_id"] is None
    assert single["address"] is None
    for fmt in ("json", "xml"):
        for path, params in (
            (f"requests/{request_id}.{fmt}", {}),
            (f"requests.{fmt}", {"extensions": "true"}),
        ):
            response = _get(client, path, alpha, **params)
            assert response.status_code == 200
            assert request_id.encode() in response.content
            assert PARCEL.encode() not in response.content
            assert b"Birch" not in response.content

    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        stored = session.get(ServiceRequest, request_id)
        assert stored.address_id_enc is not None
        assert PARCEL.encode() not in stored.address_id_enc


@pytest.mark.parametrize("service_code", ["graffiti", "encampment"])
def test_sensitive_service_withholds_zipcode(client, tenants_ab, service_code):
    # Both services are location-sensitive: graffiti is published by H3 cell, encampments
    # without a location.
    alpha, _ = tenants_ab
    form = pothole_form(alpha, service_code=service_code, zipcode="02119")
    form.pop("attribute[depth]")
    posted = client.post("/open311/v2/requests.json", data=form)
    assert posted.status_code == 201
    request_id = posted.json()[0]["service_request_id"]

    entry = _get(client, f"requests/{request_id}.json", alpha).json()[0]
    assert entry["zipcode"] is None
    xml = _get(client, f"requests/{request_id}.xml", alpha)
    assert b"02119" not in xml.content


def test_withheld_location_has_no_coordinates(client, tenants_ab):
    alpha, _ = tenants_ab
    form = pothole_form(alpha, service_code="encampment")
    form.pop("attribute[depth]")
    request_id = client.post("/open311/v2/requests.json", data=form).json()[0]["service_request_id"]
    entry = _get(client, f"requests/{request_id}.json", alpha).json()[0]
    assert entry["lat"] is None
    assert entry["long"] is None


def test_service_request_id_overrides_filters(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    old = _file(client, alpha)
    _age(hub_db, old, 200)
    recent = _file(client, alpha)
    response = _get(
        client, "requests.json", alpha, service_request_id=f"{old},{recent}", service_code="none"
    )
    assert {entry["service_request_id"] for entry in response.json()} == {old, recent}


def test_default_window_is_90_days(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    old = _file(client, alpha)
    _age(hub_db, old, 100)
    recent = _file(client, alpha)
    ids = [entry["service_request_id"] for entry in _get(client, "requests.json", alpha).json()]
    assert recent in ids
    assert old not in ids


def test_date_range_filters(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    old = _file(client, alpha)
    _age(hub_db, old, 100)
    recent = _file(client, alpha)
    start = (utcnow() - timedelta(days=120)).isoformat()
    end = (utcnow() - timedelta(days=60)).isoformat()
    ids = [
        e["service_request_id"]
        for e in _get(client, "requests.json", alpha, start_date=start, end_date=end).json()
    ]
    assert ids == [old]
    assert recent not in ids


BAD_FILTERS = [
    ({"start_date": "2024-01-01T00:00:00"}, "offset"),
    ({"end_date": "last tuesday"}, "ISO 8601"),
    ({"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-06-01T00:00:00Z"}, "90 days"),
    ({"start_date": "2024-02-01T00:00:00Z", "end_date": "2024-01-01T00:00:00Z"}, "before"),
    ({"status": "pending"}, "status"),
    ({"page_size": "5000"}, "page_size"),
    ({"page": "0"}, "page"),
    ({"page": "-1"}, "page"),
    ({"page": "99999999999999999999"}, "page"),
    ({"page": "100001"}, "page"),
]


def test_bad_filters_are_400(client, tenants_ab):
    alpha, _ = tenants_ab
    for params, word in BAD_FILTERS:
        for fmt in ("json", "xml"):
            response = _get(client, f"requests.{fmt}", alpha, **params)
            assert response.status_code == 400, params
            assert word.lower().encode() in response.content.lower(), params


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"page_size": "abc"}, "page_size must be a whole number from 1 to 1000"),
        ({"page_size": "5000"}, "page_size must be a whole number from 1 to 1000"),
        ({"page": "abc"}, "page must be a whole number from 1 to 100000"),
        ({"page": "²"}, "page must be a whole number from 1 to 100000"),
    ],
)
def test_paging_errors_give_real_range(client, tenants_ab, params, expected):
    alpha, _ = tenants_ab
    response = _get(client, "requests.json", alpha, **params)
    assert response.status_code == 400
    assert response.json() == [{"code": 400, "description": expected}]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_bad_filters_listed_together(client, tenants_ab, fmt):
    alpha, _ = tenants_ab
    response = _get(
        client,
        f"requests.{fmt}",
        alpha,
        start_date="2024-01-01T00:00:00",
        status="pending",
        page_size="5000",
    )

    assert response.status_code == 400
    assert error_entries(response, fmt) == [
        (400, "start_date has no UTC offset; add Z or an offset such as -05:00"),
        (400, "status must be open, closed or both (comma-separated)"),
        (400, "page_size must be a whole number from 1 to 1000"),
    ]


def test_bad_filter_and_date_window_listed(client, tenants_ab):
    alpha, _ = tenants_ab
    response = _get(
        client,
        "requests.json",
        alpha,
        start_date="2024-01-01T00:00:00Z",
        end_date="2024-06-01T00:00:00Z",
        page="0",
    )

    assert response.status_code == 400
    assert error_entries(response, "json") == [
        (400, "page must be a whole number from 1 to 100000"),
        (400, "start_date to end_date may not span more than 90 days"),
    ]


def test_unknown_jurisdiction_reported_alone(client, tenants_ab):
    response = client.get(
        "/open311/v2/requests.json",
        params={"jurisdiction_id": "nowhere.example", "status": "pending", "page": "0"},
    )

    assert response.status_code == 404
    [(code, description)] = error_entries(response, "json")
    assert code == 404
    assert "jurisdiction_id 'nowhere.example' is not served" in description


def test_status_and_service_code_filters(client, tenants_ab):
    alpha, _ = tenants_ab
    open_id = _file(client, alpha)
    closed_id = _file(client, alpha, lat="40.02")
    update = client.post(
        "/open311/v2/servicerequestupdates.json",
        data={
            "jurisdiction_id": alpha.jurisdiction,
            "api_key": alpha.agency,
            "service_request_id": closed_id,
            "update_id": "u-1",
            "status": "closed",
        },
    )
    assert update.status_code == 200
    closed = [
        e["service_request_id"]
        for e in _get(client, "requests.json", alpha, status="closed").json()
    ]
    opened = [
        e["service_request_id"] for e in _get(client, "requests.json", alpha, status="open").json()
    ]
    both = [
        e["service_request_id"]
        for e in _get(client, "requests.json", alpha, status="open,closed").json()
    ]
    graffiti = _get(client, "requests.json", alpha, service_code="graffiti").json()
    assert closed == [closed_id]
    assert opened == [open_id]
    assert set(both) == {open_id, closed_id}
    assert graffiti == []


def test_pagination(client, tenants_ab):
    alpha, _ = tenants_ab
    ids = [_file(client, alpha, lat=str(40.0 + i / 1000)) for i in range(5)]
    first = _get(client, "requests.json", alpha, page_size="2", page="1").json()
    third = _get(client, "requests.json", alpha, page_size="2", page="3").json()
    assert len(first) == 2
    assert len(third) == 1
    assert first[0]["service_request_id"] == ids[-1]


def test_extensions_add_notes(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    plain = _get(client, f"requests/{request_id}.json", alpha).json()[0]
    extended = _get(client, f"requests/{request_id}.json", alpha, extensions="true").json()[0]
    assert "notes" not in plain
    assert [note["status_detail"] for note in extended["notes"]] == ["submitted"]
    assert extended["extended_attributes"]["status_detail"] == "submitted"


def test_discovery(client, tenants_ab):
    alpha, _ = tenants_ab
    body = _get(client, "discovery.json", alpha).json()
    xml = _get(client, "discovery.xml", alpha)
    assert body["endpoints"][0]["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert body["endpoints"][0]["url"].endswith("/open311/v2/")
    assert b"<format>text/xml</format>" in xml.content


def test_jurisdiction_required_and_known(client):
    for path in ("services.json", "requests.xml", "services/pothole.json", "requests/X.json"):
        missing = client.get(f"/open311/v2/{path}")
        empty = client.get(f"/open311/v2/{path}", params={"jurisdiction_id": " "})
        unknown = client.get(f"/open311/v2/{path}", params={"jurisdiction_id": "nowhere.example"})
        assert missing.status_code == 400, path
        assert empty.status_code == 400, path
        assert unknown.status_code == 404, path


def test_unknown_path_and_format_are_open311_errors(client, tenants_ab):
    alpha, _ = tenants_ab
    unknown_path = _get(client, "nothing.xml", alpha)
    unknown_format = _get(client, "services.yaml", alpha)
    assert unknown_path.status_code == 404
    assert b"<errors>" in unknown_path.content
    assert unknown_format.status_code == 404
    assert unknown_format.json()[0]["code"] == 404


@pytest.mark.parametrize("extensions", ["false", "true"])
@pytest.mark.parametrize(
    ("request_id", "description"),
    [
        ("%01abc", "service request not found"),
        ("call%20me%20at%20555-0100", "service request not found"),
        ("NOSUCHID", "service request NOSUCHID not found"),
    ],
)
def test_unknown_id_error_is_wellformed_xml(
    client, tenants_ab, request_id, description, extensions
):
    alpha, _ = tenants_ab
    response = _get(client, f"requests/{request_id}.xml", alpha, extensions=extensions)
    assert response.status_code == 404
    # fromstring raises on a control character, which XML 1.0 does not allow.
    assert error_entries(response, "xml") == [(404, description)]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("requests/%00.json", {}, 404),
        ("requests/%00.json", {"extensions": "true"}, 404),
        ("tokens/%00.json", {}, 404),
        ("requests.json", {"service_request_id": "\x00"}, 200),
        ("requests.json", {"service_code": "pothole,\x00"}, 200),
        ("requests.json", {"service_code": "\x00"}, 200),
        ("services.json", {"jurisdiction_id": "\x00"}, 404),
        ("requests.json", {"jurisdiction_id": "x\x00.example.org"}, 404),
    ],
)
def test_nul_in_parameters_is_not_500(client, tenants_ab, path, params, status):
    alpha, _ = tenants_ab
    response = _get(client, path, alpha, **params)
    assert response.status_code == status
    if status == 200:
        assert response.json() == []


def test_request_xml_matches_real_capture(client, tenants_ab, shared_data):
    """The element names and order of a request match a real San Francisco capture."""
    alpha, _ = tenants_ab
    sample = (shared_data / "open311" / "ruby-open311-gem" / "service_requests.xml").read_bytes()
    expected = [child.tag for child in fromstring(sample).find("request")]
    request_id = _file(client, alpha)
    ours = fromstring(_get(client, f"requests/{request_id}.xml", alpha).content)
    assert ours.tag == "service_requests"
    assert [child.tag for child in ours.find("request")] == expected


def test_offboarded_jurisdiction_is_404(client, tenants_ab, hub_db):
    alpha, _ = tenants_ab
    with unit_of_work(SystemContext("test"), engine=get_engine(hub_db)) as session:
        session.execute(update(Tenant).where(Tenant.id == alpha.id).values(status="offboarded"))
    invalidate_cache()
    response = _get(client, "services.json", alpha)
    assert response.status_code == 404
    assert response.json()[0]["code"] == 404
