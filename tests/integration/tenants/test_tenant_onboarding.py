"""Onboarding on SQLite and PostgreSQL: create, idempotent repeat, update, conflicts."""

from __future__ import annotations

import copy
import threading
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select

from hub.core.db import get_engine, unit_of_work
from hub.core.errors import Conflict
from hub.core.tenancy import SystemContext, TenantContext
from privacy.models import AuditEntry, TenantKey
from tenants import registry
from tenants.keys import forget_cached_keys, resolve_api_key
from tenants.manifest import parse_manifest
from tenants.models import Agency, ManifestRevision, Service, Tenant
from tenants.onboarding import onboard, onboard_manifest
from tenants.registry import (
    get_tenant,
    get_tenant_by_jurisdiction,
    invalidate_cache,
    list_tenants,
    tenants_in_region,
)


def _onboard(engine, data: dict):
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        return onboard_manifest(session, parse_manifest(data))


def test_onboard_creates_tenant(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest()
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        tenant, key = onboard(session, parse_manifest(data))
    assert tenant.id == data["id"]
    assert key is not None
    credential = resolve_api_key(key, engine=engine)
    assert credential is not None
    assert credential.tenant_id == data["id"]
    assert credential.roles == frozenset({"open311"})

    with unit_of_work(TenantContext(data["id"]), engine=engine) as session:
        services = session.scalars(select(Service)).all()
        agencies = session.scalars(select(Agency)).all()
        keys = session.scalars(select(TenantKey)).all()
        actions = set(session.scalars(select(AuditEntry.action)))
    assert len(services) == len(data["services"])
    assert len(agencies) == len(data["agencies"])
    assert all(a.webhook_secret_enc for a in agencies)
    assert keys
    assert "tenant.onboard.created" in actions


def test_onboard_same_manifest_unchanged(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest()
    first = _onboard(engine, data)
    second = _onboard(engine, copy.deepcopy(data))
    assert first.outcome == "created"
    assert second.outcome == "unchanged"
    assert second.version == 1
    assert second.open311_key is None
    with unit_of_work(TenantContext(data["id"]), engine=engine) as session:
        revisions = session.scalars(select(ManifestRevision)).all()
    assert len(revisions) == 1


def test_onboard_changed_manifest_updates_catalog(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest()
    _onboard(engine, data)
    removed_code = data["services"][-1]["code"]
    changed = copy.deepcopy(data)
    changed["services"] = changed["services"][:-1]
    changed["services"][0]["sla_hours"] = 99
    # A group that no service names any more must leave the group names too.
    groups = {service.get("group", "") for service in changed["services"]}
    group_names = changed.get("profile", {}).get("group_names", {})
    for group in [name for name in group_names if name not in groups]:
        del group_names[group]
    result = _onboard(engine, changed)
    assert result.outcome == "updated"
    assert result.version == 2

    with unit_of_work(TenantContext(data["id"]), engine=engine) as session:
        rows = {s.code: s for s in session.scalars(select(Service))}
        versions = sorted(session.scalars(select(ManifestRevision.version)))
    assert rows[removed_code].active is False
    assert rows[data["services"][0]["code"]].sla_hours == 99
    assert versions == [1, 2]

    info = get_tenant(data["id"], engine=engine)
    assert removed_code not in info.services
    assert info.manifest_version == 2


def test_onboard_stores_delivery_cap(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest()
    data["agencies"][0]["max_deliveries_per_minute"] = 30
    _onboard(engine, data)
    uncapped = copy.deepcopy(data)
    uncapped["agencies"][0].pop("max_deliveries_per_minute")
    code = data["agencies"][0]["code"]

    with unit_of_work(TenantContext(data["id"]), engine=engine) as session:
        capped_rate = session.scalar(
            select(Agency.max_deliveries_per_minute).where(Agency.code == code)
        )
    _onboard(engine, uncapped)
    with unit_of_work(TenantContext(data["id"]), engine=engine) as session:
        later_rate = session.scalar(
            select(Agency.max_deliveries_per_minute).where(Agency.code == code)
        )

    assert capped_rate == 30
    assert later_rate is None


def test_other_tenant_claiming_jurisdiction_conflicts(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest()
    _onboard(engine, data)
    intruder = copy.deepcopy(data)
    intruder["id"] = data["id"] + "-x"
    with pytest.raises(Conflict) as caught:
        _onboard(engine, intruder)
    assert data["jurisdiction_id"] in caught.value.message
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        assert session.get(Tenant, intruder["id"]) is None


def test_changing_jurisdiction_conflicts(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest()
    _onboard(engine, data)
    moved = copy.deepcopy(data)
    moved["jurisdiction_id"] = "moved-" + data["jurisdiction_id"]
    with pytest.raises(Conflict):
        _onboard(engine, moved)


def test_registry_snapshot(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest("new-york-city")
    _onboard(engine, data)
    info = get_tenant_by_jurisdiction(data["jurisdiction_id"].upper(), engine=engine)
    assert info is not None
    assert info.id == data["id"]
    assert info.default_language == "en"
    assert info.timezone == "America/New_York"
    assert info.services["HEAT_HOT_WATER"].location_sensitive is True
    assert info.services["NOISE_RESIDENTIAL"].agency_code == "NYPD"
    assert info.services["WATER_SYSTEM"].sla_clock == "continuous"
    assert info.manifest.privacy.k == 5
    with pytest.raises(TypeError):
        info.services["X"] = None  # type: ignore[index]
    assert get_tenant_by_jurisdiction("unknown.example.org", engine=engine) is None


def test_tenants_in_region(db_url, make_manifest):
    engine = get_engine(db_url)
    region = f"region-{uuid.uuid4().hex[:6]}"
    a = make_manifest("boston", region=region)
    b = make_manifest("new-york-city", region=region)
    c = make_manifest("san-francisco")
    for data in (a, b, c):
        _onboard(engine, data)
    members = {t.id for t in tenants_in_region(region, engine=engine)}
    assert members == {a["id"], b["id"]}


def test_registry_sla_deadline(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest("new-york-city")
    _onboard(engine, data)
    info = get_tenant(data["id"], engine=engine)
    friday_evening = datetime(2027, 3, 5, 23, tzinfo=UTC)  # 18:00 EST, closing time
    # STREET_CONDITION: 80 business hours, 10 per weekday, so eight working days later.
    assert info.sla_deadline("STREET_CONDITION", friday_evening) == datetime(
        2027, 3, 17, 22, tzinfo=UTC
    )
    assert info.sla_deadline("WATER_SYSTEM", friday_evening) == datetime(2027, 3, 6, 5, tzinfo=UTC)
    assert info.sla_deadline("NO_SUCH_SERVICE", friday_evening) is None


def test_offboarded_tenant_is_closed(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest("boston", region=f"region-{uuid.uuid4().hex[:6]}")
    key = _onboard(engine, data).open311_key
    with unit_of_work(SystemContext("test offboard"), engine=engine) as session:
        session.get(Tenant, data["id"]).status = "offboarded"
    invalidate_cache()
    forget_cached_keys()

    assert resolve_api_key(key, engine=engine) is None
    assert get_tenant(data["id"], engine=engine).active is False
    assert tenants_in_region(data["region"], engine=engine) == []
    with pytest.raises(Conflict) as caught:
        _onboard(engine, data)
    assert "offboarded" in caught.value.message


def test_list_skips_invalid_stored_manifest(db_url, make_manifest):
    engine = get_engine(db_url)
    data = make_manifest("boston")
    _onboard(engine, data)
    broken_id = f"broken-{uuid.uuid4().hex[:8]}"
    with unit_of_work(SystemContext("test seed"), engine=engine) as session:
        session.add(
            Tenant(
                id=broken_id,
                jurisdiction_id=f"{broken_id}.example.org",
                name="Broken",
                timezone="UTC",
                languages=["en"],
                default_language="en",
                manifest={},
            )
        )
    ids = [t.id for t in list_tenants(engine=engine)]
    assert data["id"] in ids
    assert broken_id not in ids


def test_region_skips_invalid_member(db_url, make_manifest):
    engine = get_engine(db_url)
    region = f"region-{uuid.uuid4().hex[:6]}"
    data = make_manifest("boston", region=region)
    _onboard(engine, data)
    broken_id = f"broken-{uuid.uuid4().hex[:8]}"
    with unit_of_work(SystemContext("test seed"), engine=engine) as session:
        session.add(
            Tenant(
                id=broken_id,
                jurisdiction_id=f"{broken_id}.example.org",
                name="Broken",
                timezone="UTC",
                languages=["en"],
                default_language="en",
                region=region,
                manifest={},
            )
        )
    invalidate_cache()
    members = {t.id for t in tenants_in_region(region, engine=engine)}
    assert members == {data["id"]}


def test_concurrent_onboarding_conflicts(pg_url, make_manifest):
    # PostgreSQL only: on SQLite the first writer holds the database lock, so the second
    # onboarding waits instead of racing.
    engine = get_engine(pg_url)
    data = make_manifest("boston")
    manifest = parse_manifest(data)

    def onboard_elsewhere_first(_session, _context, _instances):
        # Runs after this onboarding checked ownership and before it inserts the tenant.
        worker = threading.Thread(target=_onboard, args=(engine, copy.deepcopy(data)))
        worker.start()
        worker.join(timeout=60)

    with pytest.raises(Conflict) as caught:
        with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
            event.listen(session, "before_flush", onboard_elsewhere_first, once=True)
            onboard_manifest(session, manifest)
    assert "concurrent onboarding" in caught.value.message
    assert get_tenant(data["id"], engine=engine).manifest_version == 1


def test_registry_cache_stays_bounded(sqlite_url, make_manifest, monkeypatch):
    engine = get_engine(sqlite_url)
    data = make_manifest()
    _onboard(engine, data)
    invalidate_cache()
    monkeypatch.setattr(registry, "MAX_CACHE_ENTRIES", 20)

    for n in range(50):
        assert get_tenant_by_jurisdiction(f"made-up-{n}.example.org", engine=engine) is None
    tenant = get_tenant_by_jurisdiction(data["jurisdiction_id"], engine=engine)

    assert len(registry._cache) <= 20
    assert tenant is not None
    assert tenant.id == data["id"]
