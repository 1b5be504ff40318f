"""Helpers for the pipeline tests: tenants with agencies and requests with deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from hub.cli.demo.receiver import AgencyReceiver
from hub.core.clock import utcnow
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.models import Delivery, ServiceRequest
from privacy.fields import FieldCipher
from privacy.keys import create_tenant_keys
from tenants.agencies import apply_manifest_secret, webhook_secrets
from tenants.models import Agency, Service, Tenant


def add_tenant(
    engine: Engine, receiver: AgencyReceiver, agencies: list[str], *, tenant_id: str | None = None
) -> str:
    """Insert a tenant (with a random id unless `tenant_id` is given) with keys and agencies
    whose webhooks point at `receiver`."""
    tenant_id = tenant_id or f"t{uuid.uuid4().hex[:10]}"
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
        for code in agencies:
            secret = uuid.uuid4().hex
            path = receiver.path_for(tenant_id, code)
            receiver.secrets[path] = secret
            agency = Agency(
                tenant_id=tenant_id,
                code=code,
                name=f"Agency {code}",
                webhook_url=receiver.url_for(tenant_id, code),
            )
            session.add(agency)
            apply_manifest_secret(session, agency, secret)
    return tenant_id


def add_request(
    engine: Engine,
    tenant_id: str,
    destinations: list[str],
    *,
    description: str = "Pothole in front of the library",
    address_id: str | None = None,
    expected_at: datetime | None = None,
) -> str:
    """Insert a submitted request with an encrypted description (and address id, if given) and
    one delivery per agency."""
    request_id = uuid.uuid4().hex[:10].upper()
    ctx = TenantContext(tenant_id=tenant_id, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        cipher = FieldCipher.for_tenant(session, tenant_id)
        fields: dict[str, Any] = {
            "description_enc": cipher.encrypt(
                "service_requests", "description_enc", request_id, description
            ),
            "address_id_enc": cipher.encrypt(
                "service_requests", "address_id_enc", request_id, address_id
            ),
            "dek_version": cipher.dek_version,
        }
        session.add(
            ServiceRequest(
                id=request_id,
                tenant_id=tenant_id,
                service_code="pothole",
                agency_code=destinations[0] if destinations else None,
                lat=42.36,
                lon=-71.06,
                requested_at=utcnow() - timedelta(hours=1),
                expected_at=expected_at,
                **fields,
            )
        )
        session.flush()
        for code in destinations:
            session.add(Delivery(tenant_id=tenant_id, request_id=request_id, destination=code))
    return request_id


def add_service(engine: Engine, tenant_id: str, names: dict[str, str]) -> None:
    """Add the `pothole` service, which `add_request` files under, to the tenant's catalog."""
    with unit_of_work(SystemContext("test: catalog"), engine=engine) as session:
        session.add(Service(tenant_id=tenant_id, code="pothole", names=names))


def add_duplicate_pair(engine: Engine, tenant_id: str, destinations: list[str]) -> tuple[str, str]:
    """Insert two requests and link the second to the first as its duplicate.

    Returns (original id, duplicate id).
    """
    original = add_request(engine, tenant_id, destinations)
    duplicate = add_request(engine, tenant_id, destinations)
    with unit_of_work(SystemContext("test: link a duplicate"), engine=engine) as session:
        session.get(ServiceRequest, duplicate).duplicate_of = original
    return original, duplicate


def create_database(admin_url: str) -> str:
    """Create and migrate an empty PostgreSQL database; return its URL."""
    from hub.cli.bench_support import create_database as create_empty
    from hub.core.migrate import upgrade

    url = create_empty(admin_url, prefix="hub_pipeline")
    upgrade(url)
    return url


def onboard_example(
    engine: Engine, receiver: AgencyReceiver, manifest_name: str
) -> tuple[str, str, str]:
    """Onboard an example manifest, point its agencies at `receiver` and create an Open311 key.

    Returns (tenant id, jurisdiction id, raw API key).
    """
    from sqlalchemy import select

    from tenants.keys import create_api_key
    from tenants.manifest import example_paths, load_manifest
    from tenants.onboarding import onboard

    path = next(p for p in example_paths() if p.name == manifest_name)
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        tenant, _ = onboard(session, load_manifest(path), actor="test")
        ctx = TenantContext(tenant_id=tenant.id, actor="test")
        _, api_key = create_api_key(session, ctx, roles=["open311"], label="pipeline test")
        for agency in session.scalars(select(Agency).where(Agency.tenant_id == tenant.id)):
            agency.webhook_url = receiver.url_for(tenant.id, agency.code)
            secret = webhook_secrets(session, agency).current
            receiver.secrets[receiver.path_for(tenant.id, agency.code)] = secret
        return tenant.id, tenant.jurisdiction_id, api_key
