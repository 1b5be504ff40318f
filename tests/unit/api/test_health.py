"""`/readyz`: ready, degraded while the broker is down (the outbox accepts requests), and not
ready while the database is down."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from hub.api.app import create_app
from hub.core.settings import Settings, reset_settings_cache
from loadtests.stack import free_port


def make_client(database_url: str, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("HUB_DATABASE_URL", database_url)
    reset_settings_cache()
    return TestClient(create_app(Settings(database_url=database_url), start_relay=False))


@pytest.fixture
def client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    with make_client(sqlite_url, monkeypatch) as test_client:
        yield test_client
    reset_settings_cache()


def use_relay(monkeypatch: pytest.MonkeyPatch, *, broker_ok: bool) -> None:
    relay = SimpleNamespace(broker_ok=broker_ok, database_ok=True)
    monkeypatch.setattr("hub.api.runtime.active_relay", lambda: relay)


def test_readyz_ready(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    use_relay(monkeypatch, broker_ok=True)

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_broker_down_degraded(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    use_relay(monkeypatch, broker_ok=False)

    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith(
        "failed: the outbox relay cannot publish to the broker"
    )


def test_readyz_database_down_not_ready(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on the closed port, so the query fails with OperationalError.
    unreachable = create_engine(f"postgresql+psycopg://hub@127.0.0.1:{free_port()}/hub")
    monkeypatch.setattr("hub.api.health.get_engine", lambda: unreachable)
    use_relay(monkeypatch, broker_ok=False)

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "failed: OperationalError"
