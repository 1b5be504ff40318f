"""Language choice in the Open311 API: `locale`, Accept-Language with q-values, and the
Content-Language and Vary headers of the responses whose text depends on it."""

from __future__ import annotations

import pytest
from open311_support import pothole_form

# A header whose first tag the tenants (English and Spanish) lack, and one whose first tag is
# English with a lower q than Spanish.
SPANISH_HEADERS = ("fr-FR,fr;q=0.9,es;q=0.8", "en;q=0.1, es;q=0.9")


def _get(client, path, tenant, headers=None, **params):
    return client.get(
        f"/open311/v2/{path}",
        params={"jurisdiction_id": tenant.jurisdiction, **params},
        headers=headers or {},
    )


def _file(client, tenant, headers=None, **overrides):
    return client.post(
        "/open311/v2/requests.json", data=pothole_form(tenant, **overrides), headers=headers or {}
    )


def _localized_reads(request_id):
    """Return (path, extra parameters, a Spanish text the response contains) for each read."""
    return [
        ("services.json", {}, "Bache"),
        ("services.xml", {}, "Bache"),
        ("services/pothole.json", {}, "Profundidad en cm"),
        ("services/pothole.xml", {}, "Superficie"),
        ("requests.json", {}, "Recibida"),
        (f"requests/{request_id}.json", {}, "Recibida"),
        (f"requests/{request_id}.xml", {}, "Recibida"),
        (f"requests/{request_id}.json", {"extensions": "true"}, "Recibida"),
    ]


@pytest.mark.parametrize("header", SPANISH_HEADERS)
def test_accept_language_q_values_choose_spanish(client, tenants_ab, header):
    alpha, _ = tenants_ab
    response = _get(client, "services.json", alpha, headers={"Accept-Language": header})
    names = {service["service_code"]: service["service_name"] for service in response.json()}
    assert names["pothole"] == "Bache"


def test_localized_reads_name_language_and_vary(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha).json()[0]["service_request_id"]
    headers = {"Accept-Language": SPANISH_HEADERS[0]}
    for path, params, spanish in _localized_reads(request_id):
        response = _get(client, path, alpha, headers=headers, **params)
        assert response.status_code == 200, path
        assert spanish in response.text, path
        assert response.headers["content-language"] == "es", path
        assert response.headers["vary"] == "Accept-Language", path


def test_locale_wins_over_accept_language(client, tenants_ab):
    alpha, _ = tenants_ab
    request_id = _file(client, alpha).json()[0]["service_request_id"]
    headers = {"Accept-Language": "en"}
    for path, params, spanish in _localized_reads(request_id):
        response = _get(client, path, alpha, headers=headers, locale="es", **params)
        assert spanish in response.text, path
        assert response.headers["content-language"] == "es", path
        # The URL carries the choice, so caches need not key on the header.
        assert "vary" not in response.headers, path


def test_unknown_language_gets_tenant_default(client, tenants_ab):
    alpha, _ = tenants_ab
    by_header = _get(client, "services.json", alpha, headers={"Accept-Language": "de, fr;q=0.5"})
    by_locale = _get(client, "services.json", alpha, locale="de")
    without = _get(client, "services.json", alpha)
    for response in (by_header, by_locale, without):
        assert response.headers["content-language"] == "en"
        assert "Pothole" in response.text
    assert by_header.headers["vary"] == "Accept-Language"
    assert without.headers["vary"] == "Accept-Language"


def test_post_notice_in_negotiated_language(client, tenants_ab):
    alpha, _ = tenants_ab
    by_header = _file(client, alpha, headers={"Accept-Language": SPANISH_HEADERS[1]})
    by_locale = _file(client, alpha, headers={"Accept-Language": "en"}, locale="es", lat="40.02")
    for response in (by_header, by_locale):
        assert response.status_code == 201
        assert response.json()[0]["service_notice"].startswith("Gracias.")
        assert response.headers["content-language"] == "es"
    assert by_header.headers["vary"] == "Accept-Language"
    assert "vary" not in by_locale.headers


def test_replayed_post_names_no_language(client, tenants_ab):
    """A replay repeats the stored notice, so its language is that of the first call."""
    alpha, _ = tenants_ab
    first = _file(client, alpha, headers={"Idempotency-Key": "k-1", "Accept-Language": "es"})
    replay = _file(client, alpha, headers={"Idempotency-Key": "k-1", "Accept-Language": "en"})
    assert replay.status_code == 201
    assert replay.json() == first.json()
    assert first.headers["content-language"] == "es"
    assert "content-language" not in replay.headers


def test_errors_and_discovery_name_no_language(client, tenants_ab):
    alpha, _ = tenants_ab
    headers = {"Accept-Language": "es"}
    unknown = _get(client, "services/nothing.json", alpha, headers=headers)
    discovery = _get(client, "discovery.json", alpha, headers=headers)
    assert unknown.status_code == 404
    assert "content-language" not in unknown.headers
    assert "content-language" not in discovery.headers


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_service_group_in_spanish(client, tenants_ab, fmt):
    alpha, _ = tenants_ab
    spanish = _get(client, f"services.{fmt}", alpha, locale="es")
    english = _get(client, f"services.{fmt}", alpha, locale="en")

    assert "Calles" in spanish.text
    assert "Calles" not in english.text
    assert "Streets" in english.text
