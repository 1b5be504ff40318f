"""Maintenance tasks: automatic DEK rotation, re-encryption and the retention purge.

All take ids only and are idempotent: rotation checks the primary DEK's count again,
re-encryption selects only rows still under an older DEK, and the purge selects only rows that
still hold ciphertexts.
"""

from __future__ import annotations

import structlog
from sqlalchemy import column, select, table
from sqlalchemy.orm import Session

from hub.core.db import unit_of_work
from hub.core.outbox import enqueue
from hub.core.tasks import QUEUE_MAINTENANCE, hub_task
from hub.core.tenancy import SystemContext, TenantContext
from privacy.fields import ROTATE_AFTER, ROTATE_IF_DUE_TASK, encryption_count
from privacy.keys import Keyring
from privacy.models import KIND_DEK
from privacy.retention import purge_in_batches, tenant_privacy_settings
from privacy.rotation import reencrypt_tenant, rotate_dek

log = structlog.get_logger(__name__)

REENCRYPT_TASK = "privacy.reencrypt"
RETENTION_PURGE_TASK = "privacy.retention_purge"
RETENTION_SWEEP_TASK = "privacy.retention_sweep"
RETENTION_ACTOR = "worker:retention"


def enqueue_reencryption(session: Session, tenant_id: str) -> None:
    """Queue the re-encryption of the tenant's rows, published when the caller commits."""
    enqueue(session, REENCRYPT_TASK, queue=QUEUE_MAINTENANCE, tenant_id=tenant_id)


@hub_task(ROTATE_IF_DUE_TASK, queue=QUEUE_MAINTENANCE)
def rotate_dek_if_due(*, tenant_id: str) -> int | None:
    """Rotate the tenant's DEK when its primary version passed ROTATE_AFTER encryptions.

    Returns the new version, or None when the primary is still under the limit (for example
    because another run of this task rotated it already).
    """
    ctx = TenantContext(tenant_id, actor="worker:key-rotation")
    with unit_of_work(ctx) as session:
        primary = Keyring.load(session, tenant_id).primary_version(KIND_DEK)
        if encryption_count(session, tenant_id, primary) < ROTATE_AFTER:
            return None
        version = rotate_dek(session, tenant_id, actor=ctx.actor)
        enqueue_reencryption(session, tenant_id)
    return version


@hub_task(REENCRYPT_TASK, queue=QUEUE_MAINTENANCE, time_limit=3600)
def reencrypt(*, tenant_id: str) -> dict[str, int]:
    """Move the tenant's rows to its primary DEK; committed batch by batch, so it resumes."""
    done = reencrypt_tenant(tenant_id)
    log.info("reencrypt_finished", tenant_id=tenant_id, rows=sum(done.values()))
    return done


def run_retention_purge(
    tenant_id: str, *, engine=None, actor: str = RETENTION_ACTOR
) -> dict[str, int]:
    """Purge the tenant's data past retention, with `actor` in the audit entry.

    Each batch commits on its own, so a large purge never holds its locks for long, and an
    interrupted one resumes where it stopped. Returns rows cleared per table and, under
    `deleted:TABLE`, rows deleted.
    """
    ctx = TenantContext(tenant_id, actor=actor)
    with unit_of_work(ctx, engine=engine, write=False) as session:
        settings = tenant_privacy_settings(session, tenant_id)
    return purge_in_batches(
        lambda: unit_of_work(ctx, engine=engine),
        tenant_id,
        settings["retention_days"],
        actor=ctx.actor,
    )


@hub_task(RETENTION_PURGE_TASK, queue=QUEUE_MAINTENANCE)
def retention_purge(*, tenant_id: str) -> dict[str, int]:
    """Purge the tenant's data that is past its retention periods."""
    return run_retention_purge(tenant_id)


@hub_task(RETENTION_SWEEP_TASK, queue=QUEUE_MAINTENANCE, requires_tenant=False)
def retention_sweep() -> int:
    """Queue a retention purge for every active tenant; return how many were queued."""
    tenants = table("tenants", column("id"), column("status"))
    with unit_of_work(SystemContext("retention sweep")) as session:
        ids = session.scalars(select(tenants.c.id).where(tenants.c.status == "active")).all()
        for tenant_id in ids:
            enqueue(session, RETENTION_PURGE_TASK, queue=QUEUE_MAINTENANCE, tenant_id=tenant_id)
    log.info("retention_sweep_queued", tenants=len(ids))
    return len(ids)
