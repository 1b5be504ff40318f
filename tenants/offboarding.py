"""Offboarding: export a tenant's data, then crypto-shred its keys and deactivate it.

The export comes first and is committed before any key is destroyed: the tenant's decrypted
records sealed to the public key it supplies (X25519, see `privacy.shred`), plus its anonymized
open data. Shredding then deletes the KEK, DEKs, index and audit keys, revokes the API keys and
marks the tenant offboarded. Other tenants' rows and keys are not touched.

A shredding offboard first marks the tenant `offboarding`, in a transaction of its own. A
request accepted after the export read the tenant's rows would be missing from the export and
then lose its keys, so from then on the tenant accepts none.

NOTE: other processes cache tenants and API keys for up to 5 seconds
(`tenants.registry.CACHE_TTL_SECONDS`, `tenants.keys.CACHE_TTL_SECONDS`), so they may accept a
request that early in the export, and the export may miss it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from hub.core.clock import utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.errors import Conflict, HubError, InvalidInput, NotFound
from hub.core.tenancy import ROLE_ADMIN, TenantContext
from privacy.audit import audit
from privacy.export import open_data_export, write_sealed_export
from privacy.open_data import record_export, write_export
from privacy.shred import crypto_shred, load_public_key
from tenants.keys import forget_cached_keys
from tenants.models import ApiKey, Tenant
from tenants.registry import STATUS_ACTIVE, invalidate_cache

log = structlog.get_logger(__name__)

STATUS_OFFBOARDED = "offboarded"
# The status of a tenant whose shredding offboard has started. Its API keys and Open311 endpoint
# reject every call.
STATUS_OFFBOARDING = "offboarding"
# Audit actions of the status changes around a shredding offboard's export, which stop and
# restart a city's intake.
ACTION_INTAKE_CLOSED = "tenant.intake_closed"
ACTION_INTAKE_REOPENED = "tenant.intake_reopened"


def offboard(
    tenant_id: str,
    *,
    export_dir: Path | None,
    public_key: bytes | None,
    shred: bool,
    actor: str,
    engine: Engine | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Export the tenant's data to `export_dir` and, with `shred`, destroy its keys.

    Raises InvalidInput when shredding is requested without an export, NotFound for an unknown
    tenant and Conflict for a tenant whose keys are already destroyed.
    """
    if shred and (export_dir is None or public_key is None):
        raise InvalidInput(
            "--crypto-shred needs --export DIR and --public-key FILE, so the data is exported "
            "before its keys are destroyed"
        )
    engine = engine or get_engine()
    ctx = TenantContext(tenant_id, actor=actor, roles=frozenset({ROLE_ADMIN}))
    result: dict[str, Any] = {"tenant_id": tenant_id, "files": [], "shredded": False}

    closed = _close_intake(engine, ctx) if shred else False
    try:
        _export(engine, ctx, export_dir, public_key, progress, result)
    except BaseException:
        # Nothing was destroyed, so the tenant takes requests again until the next run. An
        # interrupted export (Ctrl-C) counts too: onboarding rejects an
        # `offboarding` tenant, so only a shredding offboard would reopen it otherwise.
        if closed:
            _reopen_intake(engine, ctx)
        raise

    if shred:
        with unit_of_work(ctx, engine=engine) as session:
            result["keys_destroyed"] = crypto_shred(session, tenant_id, actor=actor)
            session.execute(
                update(ApiKey)
                .where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            tenant = session.scalars(select(Tenant).where(Tenant.id == tenant_id)).one()
            tenant.status = STATUS_OFFBOARDED
            tenant.offboarded_at = utcnow()
            audit(
                session,
                tenant_id=tenant_id,
                actor=actor,
                action="tenant.offboard",
                details={"files": len(result["files"]), "crypto_shred": True},
            )
        result["shredded"] = True
        invalidate_cache()
        log.info("tenant_offboarded", tenant_id=tenant_id)
    return result


def _checked_tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found; `hub tenants list` shows the tenants")
    if tenant.status == STATUS_OFFBOARDED:
        raise Conflict(f"tenant {tenant_id} is already offboarded and its keys are destroyed")
    return tenant


def _reopen_intake(engine: Engine, ctx: TenantContext) -> None:
    """Mark the tenant active again after a failed export. A failure here is logged and not
    raised, so the export's own error propagates, and the tenant stays `offboarding`."""
    try:
        with unit_of_work(ctx, engine=engine) as session:
            _checked_tenant(session, ctx.tenant_id).status = STATUS_ACTIVE
            audit(session, tenant_id=ctx.tenant_id, actor=ctx.actor, action=ACTION_INTAKE_REOPENED)
    except (SQLAlchemyError, HubError) as exc:
        log.error("tenant_intake_not_reopened", tenant_id=ctx.tenant_id, error=type(exc).__name__)
        return
    invalidate_cache()
    forget_cached_keys()


def _close_intake(engine: Engine, ctx: TenantContext) -> bool:
    """Mark the tenant `offboarding`, so that its API keys and Open311 endpoint reject new
    requests; return True when this call changed the status."""
    with unit_of_work(ctx, engine=engine) as session:
        tenant = _checked_tenant(session, ctx.tenant_id)
        if tenant.status == STATUS_OFFBOARDING:
            return False
        tenant.status = STATUS_OFFBOARDING
        audit(session, tenant_id=ctx.tenant_id, actor=ctx.actor, action=ACTION_INTAKE_CLOSED)
    invalidate_cache()
    forget_cached_keys()
    log.info("tenant_intake_closed", tenant_id=ctx.tenant_id)
    return True


def _export(
    engine: Engine,
    ctx: TenantContext,
    export_dir: Path | None,
    public_key: bytes | None,
    progress: Callable[[int], None] | None,
    result: dict[str, Any],
) -> None:
    """Write the sealed records and the open data to `export_dir`, adding to `result`."""
    tenant_id = ctx.tenant_id
    with unit_of_work(ctx, engine=engine) as session:
        _checked_tenant(session, tenant_id)
        if export_dir is None:
            return
        export_dir.mkdir(parents=True, exist_ok=True)
        if public_key is not None:
            sealed = export_dir / f"{tenant_id}-records.json.sealed"
            recipient = load_public_key(public_key)
            result["rows"] = write_sealed_export(session, ctx, recipient, sealed, progress=progress)
            result["files"].append(str(sealed))
        open_data = open_data_export(session, ctx)
        files = write_export(open_data, export_dir / f"{tenant_id}-open-data.geojson", "geojson")
        record_export(
            session, tenant_id, actor=ctx.actor, export=open_data, fmt="geojson", files=files
        )
        result["files"] += [str(f) for f in files]
        result["open_data"] = open_data.metadata()
