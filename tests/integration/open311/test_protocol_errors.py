"""Open311 errors for the wrong method, body type, status, date and attribute."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from open311_support import pothole_form

from hub.core.clock import isoformat, utcnow

REQUESTS = "/open311/v2/requests.json"
UPDATES = "/open311/v2/servicerequestupdates.json"


def _file(client, tenant):
    response = client.post(REQUESTS, data=pothole_form(tenant))
    assert response.status_code == 201
    return response.json()[0]["service_request_id"]


def _public_view(client, tenant, request_id, **params):
    """Return the request as GET requests/{id} shows it to the public."""
    response = client.get(
        f"/open311/v2/requests/{request_id}.json",
        params={"jurisdiction_id": tenant.jurisdiction, **params},
    )
    return response.json()[0]


def _update(client, tenant, request_id, update_id, status, **extra):
    form = {
        "jurisdiction_id": tenant.jurisdiction,
        "api_key": tenant.agency,
        "service_request_id": request_id,
        "update_id": update_id,
        "status": status,
        **extra,
    }
    return client.post(UPDATES, data=form)


@pytest.mark.parametrize("path", [REQUESTS, UPDATES])
def test_json_body_is_400(client, tenants_ab, path):
    alpha, _ = tenants_ab
    response = client.post(path, content=json.dumps(pothole_form(alpha)).encode())

    assert response.status_code == 400
    description = response.json()[0]["description"]
    assert "takes form fields" in description
    assert "application/x-www-form-urlencoded or multipart/form-data" in description
    assert "jurisdiction_id" not in description


def test_json_content_type_is_400(client, tenants_ab):
    alpha, _ = tenants_ab
    response = client.post(
        REQUESTS.replace(".json", ".xml"),
        content=json.dumps(pothole_form(alpha)).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 400
    assert b"<errors><error><code>400</code>" in response.content
    assert b"not a body of application/json;" in response.content
    assert b"Lovelace" not in response.content


def test_multipart_form_still_accepted(client, tenants_ab):
    alpha, _ = tenants_ab
    fields = {key: (None, value) for key, value in pothole_form(alpha).items()}
    response = client.post(REQUESTS, files=fields)

    assert response.status_code == 201


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/X-WWW-Form-Urlencoded",
        "APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8",
        "application/x-www-form-urlencoded ; charset=utf-8",
    ],
)
def test_form_media_type_any_case(client, tenants_ab, content_type):
    alpha, _ = tenants_ab
    body = urlencode(pothole_form(alpha)).encode()
    response = client.post(REQUESTS, content=body, headers={"Content-Type": content_type})

    assert response.status_code == 201


def test_multipart_media_type_any_case(client, tenants_ab):
    alpha, _ = tenants_ab
    fields = {key: (None, value) for key, value in pothole_form(alpha).items()}
    request = client.build_request("POST", REQUESTS, files=fields)
    boundary = request.headers["content-type"].split("boundary=", 1)[1]
    response = client.post(
        REQUESTS,
        content=request.read(),
        headers={"Content-Type": f"Multipart/Form-Data; boundary={boundary}"},
    )

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/open311/v2/requests.json", "GET, POST"),
        ("PUT", "/open311/v2/requests/abc.xml", "GET"),
        ("DELETE", "/open311/v2/services.json", "GET"),
        ("GET", "/open311/v2/servicerequestupdates.json", "POST"),
    ],
)
def test_wrong_method_is_405(client, method, path, allowed):
    response = client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    if path.endswith(".xml"):
        assert b"<errors><error><code>405</code>" in response.content
    else:
        error = response.json()[0]
        assert error["code"] == 405
        assert error["description"] == (
            f"method {method} is not allowed on this path; use {allowed}"
        )


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_path_is_404(client, method):
    response = client.request(method, "/open311/v2/no-such-method.json")

    assert response.status_code == 404
    assert response.json()[0]["code"] == 404


def test_bad_status_lists_accepted(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    response = _update(client, alpha, request_id, "u-status", "archived")

    assert response.status_code == 400
    description = response.json()[0]["description"]
    assert description == (
        "status must be one of open, submitted, acknowledged, in_progress, on_hold, closed"
    )


def test_future_update_date_is_400(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    far = _update(
        client, alpha, request_id, "u-far", "acknowledged", updated_datetime="2030-01-01T00:00:00Z"
    )
    notes = _public_view(client, alpha, request_id, extensions="true")["notes"]

    assert far.status_code == 400
    assert "more than 5 minutes ahead of the server clock" in far.json()[0]["description"]
    assert len(notes) == 1


def test_update_date_within_skew_accepted(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    soon = isoformat(utcnow() + timedelta(minutes=2))
    response = _update(client, alpha, request_id, "u-soon", "acknowledged", updated_datetime=soon)

    assert response.status_code == 200


def test_update_before_filing_is_400(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha)
    early = _update(
        client, alpha, request_id, "u-early", "closed", updated_datetime="2020-01-01T00:00:00Z"
    )
    stored = _public_view(client, alpha, request_id)

    assert early.status_code == 400
    description = early.json()[0]["description"]
    assert (
        "updated_datetime 2020-01-01T00:00:00+00:00 is more than 5 minutes before the request's"
        in description
    )
    assert stored["status"] != "closed"


@pytest.mark.parametrize(
    "dates",
    [
        {"end_date": "0001-01-01T00:00:00Z"},
        {"start_date": "9999-12-31T23:59:59Z"},
        {"start_date": "0001-01-01T00:00:00+05:00", "end_date": "0001-01-02T00:00:00Z"},
    ],
)
def test_date_out_of_range_is_400(client, tenants_ab, dates):
    alpha, _ = tenants_ab
    response = client.get(REQUESTS, params={"jurisdiction_id": alpha.jurisdiction, **dates})

    assert response.status_code == 400
    errors = response.json()
    # Each date out of range gets its own entry.
    assert len(errors) == len(dates)
    for error in errors:
        assert "is out of range; use a year from 1900 to 2999" in error["description"]


def test_unknown_attribute_is_named(client, tenants_ab):
    alpha, _ = tenants_ab
    response = client.post(REQUESTS, data=pothole_form(alpha, **{"attribute[secret_code]": "x"}))

    assert response.status_code == 400
    assert response.json()[0]["description"].startswith(
        "attribute[secret_code] is not defined for service pothole;"
    )


def test_free_text_attribute_code_not_repeated(client, tenants_ab):
    alpha, _ = tenants_ab
    code = "call Ada Lovelace on 215 555 0100"
    response = client.post(REQUESTS, data=pothole_form(alpha, **{f"attribute[{code}]": "x"}))

    assert response.status_code == 400
    assert "not defined for service pothole" in response.json()[0]["description"]
    assert b"Lovelace" not in response.content
    assert b"555 0100" not in response.content


@pytest.mark.parametrize(
    "changes",
    [
        {"lat": "91"},
        {"media_url": "javascript:alert('PRIVATE-MEDIA-MARKER')"},
        {"phone": "PRIVATE-PHONE-MARKER"},
        {"attribute[depth]": "deep"},
    ],
)
def test_errors_never_repeat_personal_fields(client, tenants_ab, changes):
    alpha, _ = tenants_ab
    form = pothole_form(
        alpha,
        description="PRIVATE-DESCRIPTION-MARKER",
        address_string="PRIVATE-ADDRESS-MARKER 1 Main St",
        **changes,
    )
    response = client.post(REQUESTS, data=form)

    assert response.status_code == 400
    assert b"PRIVATE-" not in response.content
    assert b"Lovelace" not in response.content
    assert b"resident@example.com" not in response.content


def test_discovery_changeset_has_offset(client, tenants_ab):
    alpha, _ = tenants_ab
    response = client.get(
        "/open311/v2/discovery.json", params={"jurisdiction_id": alpha.jurisdiction}
    )

    assert response.json()["changeset"].endswith("+00:00")
