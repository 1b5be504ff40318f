"""Celery tasks of overflow routing.

Routing decisions are audited in batches by a task instead of inside the API transaction: the
audit chain takes a per-tenant lock, and holding it on every contact would serialize a surge.
The contact row stores the decision with `decision_audited` false when the API responds. Every
API process's live board looks for such rows each second and queues this task for their
tenant, so a decision stored just before a crash is still audited by the next one.
"""

from __future__ import annotations

import structlog
from sqlalchemy import select

from failover.models import UNAUDITED_CONTACT, Contact
from failover.routing import decode_excluded
from hub.core.db import unit_of_work
from hub.core.tasks import QUEUE_OVERFLOW, hub_task
from hub.core.tenancy import TenantContext
from privacy.audit import audit

log = structlog.get_logger(__name__)

AUDIT_DECISIONS_TASK = "failover.audit_decisions"
# Decisions audited per transaction, and the most transactions in one run. A run stops at its
# first short batch, and the next queued task finishes a larger backlog.
AUDIT_BATCH = 500
AUDIT_BATCHES_PER_RUN = 20


@hub_task(AUDIT_DECISIONS_TASK, queue=QUEUE_OVERFLOW)
def audit_decisions(*, tenant_id: str, limit: int = AUDIT_BATCH) -> int:
    """Write the audit entries of a tenant's unaudited decisions, oldest first, `limit` per
    transaction. Return how many it wrote.

    The rows are locked with SKIP LOCKED where the database supports it, so two runs at once
    audit different contacts, and a rerun after a crash finds only the rows still unaudited.
    """
    total = 0
    for _batch in range(AUDIT_BATCHES_PER_RUN):
        written = _audit_batch(tenant_id, limit)
        total += written
        if written < limit:
            break
    if total:
        log.info("overflow_decisions_audited", tenant_id=tenant_id, count=total)
    return total


def _audit_batch(tenant_id: str, limit: int) -> int:
    ctx = TenantContext(tenant_id=tenant_id, actor="worker:overflow")
    with unit_of_work(ctx) as session:
        contacts = session.scalars(
            select(Contact)
            .where(Contact.tenant_id == tenant_id, UNAUDITED_CONTACT)
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
                    # Audit details accept only scalars and lists of them, so each passed-over
                    # partner is one "center_id:reason" string (center ids are slugs).
                    "excluded_partners": [
                        f"{center_id}:{reason}"
                        for center_id, reason in decode_excluded(contact.excluded_partners).items()
                    ],
                },
            )
            contact.decision_audited = True
    return len(contacts)
