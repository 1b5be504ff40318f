"""Fixtures for the privacy tests: migrated databases with onboarded tenants."""

from __future__ import annotations

import uuid

import pytest
from open311_support import northeast_manifest
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
                manifest=northeast_manifest(tenant_id, region=None),
            )
        )
        session.flush()
        create_tenant_keys(session, tenant_id)
    return tenant_id


def declare_staff_purposes(engine: Engine, tenant_id: str, codes: list[str]) -> None:
    """Replace the staff decryption purposes of the tenant's stored manifest with `codes`."""
    with unit_of_work(SystemContext("test setup"), engine=engine) as session:
        tenant = session.get(Tenant, tenant_id)
        manifest = dict(tenant.manifest)
        privacy = dict(manifest.get("privacy") or {})
        privacy["decryption_purposes"] = [
            {"code": code, "descriptions": {"en": f"Test purpose {code}."}} for code in codes
        ]
        manifest["privacy"] = privacy
        tenant.manifest = manifest


@pytest.fixture
def declare_staff():
    return declare_staff_purposes


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


def add_requests(engine: Engine, tenant_id: str, count: int, *, start: int = 0) -> list[str]:
    """Insert `count` service requests with encrypted fields and one status event each."""
    from datetime import UTC, datetime, timedelta

    from hub.requests.models import ServiceRequest, StatusEvent
    from privacy.fields import FieldCipher

    ids = []
    base = datetime(2024, 3, 1, 12, tzinfo=UTC)
    with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
        cipher = FieldCipher.for_tenant(session, tenant_id)
        for n in range(start, start + count):
            row_id = f"{tenant_id[-6:]}R{n:07d}"
            ids.append(row_id)

            def enc(column: str, value: str, row_id: str = row_id) -> bytes | None:
                return cipher.encrypt("service_requests", column, row_id, value)

            session.add(
                ServiceRequest(
                    id=row_id,
                    tenant_id=tenant_id,
                    service_code="pothole",
                    requested_at=base + timedelta(minutes=n),
                    lat=42.3601,
                    lon=-71.0589,
                    description_enc=enc("description_enc", f"hole number {n}"),
                    email_enc=enc("email_enc", f"resident{n}@example.org"),
                    phone_enc=enc("phone_enc", "+12025550123"),
                    first_name_enc=enc("first_name_enc", "Ada"),
                    dek_version=cipher.dek_version,
                )
            )
        session.flush()
        for row_id in ids:
            event = StatusEvent(
                tenant_id=tenant_id,
                request_id=row_id,
                status="submitted",
                actor="test",
                channel="api",
                dek_version=cipher.dek_version,
            )
            session.add(event)
            session.flush()
            event.note_enc = cipher.encrypt("status_events", "note_enc", str(event.id), "noted")
    return ids


@pytest.fixture
def seed_requests():
    return add_requests


def close_past_retention(engine: Engine, tenant_id: str, request_id: str) -> None:
    """Mark a request closed on 2020-01-01, past the default 730-day retention of personal data."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from hub.requests.models import ServiceRequest

    with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == request_id)
            .values(status="closed", closed_at=datetime(2020, 1, 1, tzinfo=UTC))
        )


@pytest.fixture
def close_expired():
    return close_past_retention
