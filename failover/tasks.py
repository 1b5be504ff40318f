"""Celery tasks of overflow routing.

Routing decisions are audited in batches by a task instead of inside the API transaction: the
audit chain takes a per-tenant lock, and holding it on every contact would serialize a surge.
The contact row stores the decision with `decision_audited` false when the API responds. The
worker's scheduler runs `failover.audit_sweep` every few seconds, which queues this task for
each tenant with such rows, so a decision stored just before a crash is still audited. The API
processes do none of this: background work there delays the routing decisions they answer.
"""

from __future__ import annotations

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from failover.models import Contact
from hub.core.db import unit_of_work
from hub.core.outbox import enqueue
from hub.core.tasks import QUEUE_OVERFLOW, hub_task
from hub.core.tenancy import SystemContext, TenantContext
from privacy.audit import audit
from tenants.models import Tenant

log = structlog.get_logger(__name__)

AUDIT_DECISIONS_TASK = "failover.audit_decisions"
AUDIT_SWEEP_TASK = "failover.audit_sweep"
# Decisions audited per transaction; a larger backlog is finished by the next queued task.
AUDIT_BATCH = 500


@hub_task(AUDIT_DECISIONS_TASK, queue=QUEUE_OVERFLOW)
def audit_decisions(*, tenant_id: str, limit: int = AUDIT_BATCH) -> int:
    """Write the audit entry of up to `limit` unaudited decisions of a tenant, oldest first;
    return how many it wrote.

    The rows are locked with SKIP LOCKED where the database supports it, so two runs at once
    audit different contacts, and a rerun after a crash finds only the rows still unaudited.
    """
    ctx = TenantContext(tenant_id=tenant_id, actor="worker:overflow")
    with unit_of_work(ctx) as session:
        contacts = session.scalars(
            select(Contact)
            .where(Contact.tenant_id == tenant_id, Contact.decision_audited.is_(False))
            .order_by(Contact.arrived_at, Contact.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for contact in contacts:
            audit(
                session,
                tenant_id=tenant_id,
                actor=contact.created_by or ctx.actor,
                action="overflow.route",
                details={
                    "decision_id": contact.decision_id,
                    "contact_id": contact.id,
                    "target": "partner" if contact.agreement_id else "home",
                    "center_id": contact.center_id,
                    "agreement_id": contact.agreement_id,
                    "reason": contact.decision_reason,
                },
            )
            contact.decision_audited = True
    if contacts:
        log.info("overflow_decisions_audited", tenant_id=tenant_id, count=len(contacts))
    return len(contacts)


def tenants_with_unaudited(session: Session) -> list[str]:
    """Return the tenants that have routing decisions without an audit entry yet."""
    pending = (
        select(Contact.id)
        .where(Contact.tenant_id == Tenant.id, Contact.decision_audited.is_(False))
        .exists()
    )
    return list(session.scalars(select(Tenant.id).where(pending).order_by(Tenant.id)))


@hub_task(AUDIT_SWEEP_TASK, queue=QUEUE_OVERFLOW, requires_tenant=False)
def audit_sweep() -> int:
    """Queue `failover.audit_decisions` for every tenant with unaudited decisions; return how
    many tenants were queued. The scheduler runs this periodically."""
    with unit_of_work(SystemContext("overflow audit sweep")) as session:
        tenant_ids = tenants_with_unaudited(session)
        for tenant_id in tenant_ids:
            enqueue(session, AUDIT_DECISIONS_TASK, queue=QUEUE_OVERFLOW, tenant_id=tenant_id)
    if tenant_ids:
        log.info("overflow_audits_queued", tenants=len(tenant_ids))
    return len(tenant_ids)
