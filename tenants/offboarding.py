"""Offboarding: export a tenant's data, then crypto-shred its keys and deactivate it.

The export comes first and is committed before any key is destroyed: the tenant's decrypted
records sealed to the public key it supplies (X25519, see `privacy.shred`), plus its anonymized
open data. Shredding then deletes the KEK, DEKs, index and audit keys, revokes the API keys and
marks the tenant offboarded. Other tenants' rows and keys are not touched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, select, update

from hub.core.clock import utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.errors import Conflict, InvalidInput, NotFound
from hub.core.tenancy import ROLE_ADMIN, TenantContext
from privacy.audit import audit
from privacy.export import open_data_export, write_sealed_export
from privacy.open_data import record_export, write_export
from privacy.shred import crypto_shred, load_public_key
from tenants.models import ApiKey, Tenant
from tenants.registry import invalidate_cache

log = structlog.get_logger(__name__)

STATUS_OFFBOARDED = "offboarded"


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

    with unit_of_work(ctx, engine=engine) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"tenant {tenant_id} not found; `hub tenants list` shows the tenants")
        if tenant.status == STATUS_OFFBOARDED:
            raise Conflict(f"tenant {tenant_id} is already offboarded and its keys are destroyed")
        if export_dir is not None:
            export_dir.mkdir(parents=True, exist_ok=True)
            if public_key is not None:
                sealed = export_dir / f"{tenant_id}-records.json.sealed"
                recipient = load_public_key(public_key)
                result["rows"] = write_sealed_export(
                    session, ctx, recipient, sealed, progress=progress
                )
                result["files"].append(str(sealed))
            open_data = open_data_export(session, ctx)
            files = write_export(
                open_data, export_dir / f"{tenant_id}-open-data.geojson", "geojson"
            )
            record_export(
                session, tenant_id, actor=actor, export=open_data, fmt="geojson", files=files
            )
            result["files"] += [str(f) for f in files]
            result["open_data"] = open_data.metadata()

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
