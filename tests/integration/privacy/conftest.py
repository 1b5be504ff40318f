"""Fixtures for the privacy tests: migrated databases with onboarded tenants."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine

from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import ROLE_AUDITOR, ROLE_STAFF, SystemContext, TenantContext
from privacy.keys import create_tenant_keys
from tenants.models import Tenant


def add_tenant(engine: Engine) -> str:
    """Insert a tenant row with keys and return its id."""
    tenant_id = f"t{uuid.uuid4().hex[:10]}"
    with unit_of_work(SystemContext("test setup"), engine=engine) as session:
        session.add(
            Tenant(
                id=tenant_id,
                jurisdiction_id=f"{tenant_id}.example.org",
                name=f"Test city {tenant_id}",
                timezone="America/New_York",
                languages=["en", "es"],
                default_language="en",
                manifest={},
            )
        )
        session.flush()
        create_tenant_keys(session, tenant_id)
    return tenant_id


@pytest.fixture
def engine(db_url: str) -> Engine:
    return get_engine(db_url)


@pytest.fixture
def tenant(engine: Engine) -> str:
    return add_tenant(engine)


@pytest.fixture
def other_tenant(engine: Engine) -> str:
    return add_tenant(engine)


@pytest.fixture
def staff(tenant: str) -> TenantContext:
    return TenantContext(tenant_id=tenant, actor="apikey:1", roles=frozenset({ROLE_STAFF}))


@pytest.fixture
def auditor(tenant: str) -> TenantContext:
    """An auditor credential that also carries the staff role: auditing still wins."""
    return TenantContext(
        tenant_id=tenant, actor="apikey:2", roles=frozenset({ROLE_AUDITOR, ROLE_STAFF})
    )
