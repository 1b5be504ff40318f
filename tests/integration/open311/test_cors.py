"""CORS on the Open311 API: off by default, and with HUB_CORS_ORIGINS set, preflights and
response headers for the listed origins on the Open311 paths only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.core.settings import Settings

APP_ORIGIN = "https://app.example.org"
OTHER_ORIGIN = "https://other.example.net"
PREFLIGHT_POST = {
    "Origin": APP_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "idempotency-key, content-type",
}


@pytest.fixture
def cors_client(hub_db: str) -> Iterator[Callable[[str], TestClient]]:
    """Return a factory of API clients whose HUB_CORS_ORIGINS is the given value."""
    with ExitStack() as stack:

        def make(origins: str) -> TestClient:
            settings = Settings(database_url=hub_db, cors_origins=origins, max_body_bytes=2000)
            return stack.enter_context(TestClient(create_app(settings, start_relay=False)))

        yield make


def _services(client, tenant, origin=APP_ORIGIN):
    return client.get(
        "/open311/v2/services.json",
        params={"jurisdiction_id": tenant.jurisdiction},
        headers={"Origin": origin, "Accept-Language": "es"},
    )


def test_no_cors_without_setting(client, tenants_ab):
    alpha, _ = tenants_ab
    preflight = client.options("/open311/v2/requests.json", headers=PREFLIGHT_POST)
    response = _services(client, alpha)
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in response.headers


def test_preflight_allows_listed_origin(cors_client):
    client = cors_client(f"{APP_ORIGIN}, {OTHER_ORIGIN}")
    response = client.options("/open311/v2/requests.json", headers=PREFLIGHT_POST)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert "idempotency-key" in response.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers


def test_preflight_rejects_unlisted_origin(cors_client):
    client = cors_client(APP_ORIGIN)
    headers = {**PREFLIGHT_POST, "Origin": OTHER_ORIGIN}
    response = client.options("/open311/v2/requests.json", headers=headers)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_get_names_listed_origin(cors_client, tenants_ab):
    alpha, _ = tenants_ab
    client = cors_client(APP_ORIGIN)
    allowed = _services(client, alpha)
    other = _services(client, alpha, origin=OTHER_ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert allowed.headers["access-control-expose-headers"] == "X-Request-Id, Retry-After"
    assert allowed.headers["vary"] == "Accept-Language, Origin"
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in other.headers
    assert other.headers["vary"] == "Accept-Language, Origin"


def test_any_origin_without_credentials(cors_client, tenants_ab):
    alpha, _ = tenants_ab
    client = cors_client("*")
    response = _services(client, alpha, origin=OTHER_ORIGIN)
    preflight = client.options("/open311/v2/requests.json", headers=PREFLIGHT_POST)
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers


def test_errors_carry_cors_headers(cors_client):
    client = cors_client(APP_ORIGIN)
    missing = client.get("/open311/v2/services.json", headers={"Origin": APP_ORIGIN})
    too_large = client.post(
        "/open311/v2/requests.json",
        content=b"x" * 3000,
        headers={"Origin": APP_ORIGIN, "content-type": "application/x-www-form-urlencoded"},
    )
    assert missing.status_code == 400
    assert missing.headers["access-control-allow-origin"] == APP_ORIGIN
    assert too_large.status_code == 413
    assert too_large.headers["access-control-allow-origin"] == APP_ORIGIN


def test_other_paths_get_no_cors(cors_client):
    client = cors_client("*")
    health = client.get("/healthz", headers={"Origin": APP_ORIGIN})
    staff = client.get("/api/v1/requests/find", headers={"Origin": APP_ORIGIN})
    preflight = client.options("/api/v1/requests/find", headers=PREFLIGHT_POST)
    for response in (health, staff, preflight):
        assert "access-control-allow-origin" not in response.headers
    assert preflight.status_code == 405
