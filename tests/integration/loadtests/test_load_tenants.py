"""`hub loadtest` works on its own `loadtest-` tenants and never changes other tenants.

The runs target a closed loopback port, so Locust records only failures: these tests check
what the harness does to the database, not the load figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from loadtests import load_tenants
from loadtests.stack import free_port
from tenants.manifest import example_paths, load_manifest
from tenants.models import Agency, ApiKey, Tenant
from tenants.onboarding import onboard

pytestmark = pytest.mark.slow

REAL_WEBHOOK = "https://311.example.org/hooks/pwd"


def onboard_real_tenant(engine: Engine) -> str:
    """Onboard the Boston example as a real tenant with its own agency webhook URL."""
    manifest = load_manifest(next(p for p in example_paths() if p.stem == "boston"))
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        tenant, _key = onboard(session, manifest, actor="test")
    context = TenantContext(tenant_id=tenant.id, actor="test")
    with unit_of_work(context, engine=engine) as session:
        for agency in session.scalars(select(Agency)):
            agency.webhook_url = REAL_WEBHOOK
    return tenant.id


def tenant_state(engine: Engine, tenant_id: str) -> dict:
    context = TenantContext(tenant_id=tenant_id, actor="test")
    with unit_of_work(context, engine=engine, write=False) as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        keys = session.scalars(select(ApiKey)).all()
        return {
            "manifest_version": tenant.manifest_version,
            "keys": sorted((k.id, k.revoked_at is None) for k in keys),
            "webhooks": sorted(a.webhook_url for a in session.scalars(select(Agency))),
        }


def tenant_ids(engine: Engine) -> list[str]:
    with unit_of_work(SystemContext("test"), engine=engine, write=False) as session:
        return sorted(session.scalars(select(Tenant.id)))


def hub_loadtest(database_url: str, report_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ.copy()
    env["HUB_DATABASE_URL"] = database_url
    env.pop("HUB_BROKER_URL", None)
    command = [sys.executable, "-m", "hub.cli.main", "loadtest", "daily", "--duration", "5"]
    command += ["--users", "1", "--target", f"http://127.0.0.1:{free_port()}"]
    command += ["--report", str(report_dir), *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def test_load_manifest_prefixes_ids() -> None:
    example = next(p for p in example_paths() if p.stem == "new-york-city")

    manifest = load_tenants.load_manifest_for(example)

    assert manifest.id == "loadtest-new-york-city"
    assert manifest.jurisdiction_id == "loadtest-nyc.gov"
    assert [c.id for c in manifest.overflow.centers] == ["loadtest-nyc-311-main"]
    for agency in manifest.agencies:
        assert agency.webhook_url.startswith(load_tenants.PLACEHOLDER_WEBHOOK)


def test_revoke_keys_rejects_real_tenant(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    tenant_id = onboard_real_tenant(engine)

    with pytest.raises(ValueError, match="not a load-test tenant"):
        load_tenants.revoke_keys(engine, [tenant_id])


def test_loadtest_rejects_database_with_real_tenants(sqlite_url: str, tmp_path: Path) -> None:
    engine = get_engine(sqlite_url)
    tenant_id = onboard_real_tenant(engine)
    before = tenant_state(engine, tenant_id)

    result = hub_loadtest(sqlite_url, tmp_path / "report")

    assert result.returncode != 0
    assert "--allow-real-tenants" in result.stderr
    assert "boston" in result.stderr
    assert tenant_state(engine, tenant_id) == before
    assert tenant_ids(engine) == [tenant_id]


def test_loadtest_beside_real_tenants_leaves_them(sqlite_url: str, tmp_path: Path) -> None:
    engine = get_engine(sqlite_url)
    tenant_id = onboard_real_tenant(engine)
    before = tenant_state(engine, tenant_id)

    result = hub_loadtest(sqlite_url, tmp_path / "report", "--allow-real-tenants")

    # Every request to the closed port fails, so the run fails its criteria.
    assert result.returncode == 1, result.stderr[-2000:]
    assert tenant_state(engine, tenant_id) == before
    load_ids = [t for t in tenant_ids(engine) if t != tenant_id]
    assert load_ids == ["loadtest-boston", "loadtest-new-york-city", "loadtest-san-francisco"]
    for load_id in load_ids:
        state = tenant_state(engine, load_id)
        assert state["keys"], load_id
        assert not any(active for _id, active in state["keys"]), load_id
        assert all(url.startswith("http://127.0.0.1:") for url in state["webhooks"]), load_id
