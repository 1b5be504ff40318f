"""`/metrics` on the API: valid exposition text, bounded labels, no personal data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hub.api.app import create_app
from hub.core.settings import Settings, reset_settings_cache

# Values a careless label would copy from a request: an email, a phone number and a name.
PLANTED = ("jane.canary@example.org", "+15555550147", "Canaryname")


@pytest.fixture
def client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("HUB_DATABASE_URL", sqlite_url)
    reset_settings_cache()
    app = create_app(Settings(database_url=sqlite_url), start_relay=False)
    with TestClient(app) as test_client:
        yield test_client
    reset_settings_cache()


def scrape(client: TestClient) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200
    families = text_string_to_metric_families(response.text)
    return {family.name: family.samples for family in families}


def test_metrics_parse_with_prometheus_parser(client: TestClient) -> None:
    client.get("/healthz")
    families = scrape(client)

    assert "hub_http_requests" in families
    assert "hub_http_request_seconds" in families
    assert all("tenant" in s.labels for s in families["hub_http_request_seconds"])
    assert "hub_worker_queue_depth" in families
    assert "hub_outbox_pending" in families


def test_metrics_collectors_report_up(client: TestClient) -> None:
    families = scrape(client)
    up = {s.labels["collector"]: s.value for s in families["hub_scrape_collector_up"]}

    assert up["outbox"] == 1.0
    assert up["broker_queues"] == 1.0
    assert up["overflow"] == 1.0
    assert up["alerts"] == 1.0
    assert up["alert_totals"] == 1.0
    assert up["privacy"] == 1.0


def test_metrics_queue_depth_per_queue(client: TestClient) -> None:
    families = scrape(client)
    queues = {s.labels["queue"] for s in families["hub_worker_queue_depth"]}

    assert queues == {"intake", "alerts.urgent", "alerts.bulk", "notify", "overflow", "maintenance"}


def test_metrics_labels_carry_no_personal_data(client: TestClient) -> None:
    email, phone, name = PLANTED
    client.get(f"/open311/v2/requests/{email}.json")
    client.get("/healthz", params={"email": email, "phone": phone, "name": name})
    client.post(
        "/open311/v2/requests.json",
        data={"email": email, "phone": phone, "first_name": name, "description": name},
    )
    client.get(f"/api/v1/{phone}", headers={"x-request-id": name})

    families = scrape(client)
    label_values = [
        value for samples in families.values() for s in samples for value in s.labels.values()
    ]
    assert label_values, "the scrape returned no labelled samples"
    for planted in PLANTED:
        assert not [v for v in label_values if planted.lower() in v.lower()], planted


def test_privacy_reader_reports_onboarded_tenant(client: TestClient) -> None:
    from hub.api.observability import AUDIT_CHAIN, KEY_AGE, privacy_reader
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext
    from tenants.manifest import example_paths, load_manifest
    from tenants.onboarding import onboard

    manifest = load_manifest(next(p for p in example_paths() if p.name == "boston.yaml"))
    with unit_of_work(SystemContext("test onboarding")) as session:
        onboard(session, manifest, actor="test")
    reader = privacy_reader()
    assert reader is not None

    samples = reader()

    kinds = {labels[1] for labels, _ in samples[KEY_AGE.name] if labels[0] == "boston"}
    assert {"kek", "dek"} <= kinds
    assert all(age >= 0 for _, age in samples[KEY_AGE.name])
    chains = dict(samples[AUDIT_CHAIN.name])
    assert chains[("boston",)] >= 1


def test_overflow_and_fanout_readers_start_empty(client: TestClient) -> None:
    from hub.api.observability import CONTACTS_WAITING, FANOUT_LAST, fanout_reader, overflow_reader

    assert overflow_reader()()[CONTACTS_WAITING.name] == []
    assert fanout_reader()()[FANOUT_LAST.name] == []


def test_audit_regression_gauge_survives_new_entries(client: TestClient) -> None:
    """Entries deleted from a chain's end and replaced by as many new ones keep the length
    gauge level, so the regression gauge is what shows the deletion."""
    from sqlalchemy import delete

    from hub.api.observability import AUDIT_CHAIN, AUDIT_REGRESSIONS, privacy_reader
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext
    from privacy.audit import audit
    from privacy.models import AuditEntry

    def append(count: int) -> None:
        for _ in range(count):
            with unit_of_work(SystemContext("test")) as session:
                audit(session, tenant_id=None, actor="cli:test", action="test.event")

    append(3)
    reader = privacy_reader()
    assert reader is not None
    before = reader()
    assert dict(before[AUDIT_REGRESSIONS.name])[("hub",)] == 0
    length = dict(before[AUDIT_CHAIN.name])[("hub",)]

    with unit_of_work(SystemContext("test")) as session:
        session.execute(delete(AuditEntry).where(AuditEntry.chain == "hub", AuditEntry.seq >= 2))
    append(2)

    after = reader()
    assert dict(after[AUDIT_CHAIN.name])[("hub",)] == length
    assert dict(after[AUDIT_REGRESSIONS.name])[("hub",)] == 1


def test_audit_regression_gauge_ignores_retention_cut(client: TestClient) -> None:
    """A head this process read that the retention purge later deleted, from the chain's
    start up to the signed anchor, is no regression."""
    from datetime import timedelta

    from hub.api.observability import AUDIT_REGRESSIONS, privacy_reader
    from hub.core.clock import utcnow
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext
    from privacy.audit import audit
    from privacy.retention import purge_audit_batch

    with unit_of_work(SystemContext("test")) as session:
        for _ in range(3):
            audit(session, tenant_id="metrics-city", actor="cli:test", action="test.event")
    reader = privacy_reader()
    assert reader is not None
    assert dict(reader()[AUDIT_REGRESSIONS.name])[("metrics-city",)] == 0

    # A cutoff after every entry so far: the purge deletes #1..#3 and anchors the chain at #3.
    with unit_of_work(SystemContext("test")) as session:
        deleted = purge_audit_batch(
            session, "metrics-city", utcnow() + timedelta(days=1), actor="cli:test"
        )
    assert deleted == 3

    assert dict(reader()[AUDIT_REGRESSIONS.name])[("metrics-city",)] == 0
