"""Celery tasks of overflow routing.

Routing decisions are audited by a task instead of inside the API transaction: the audit chain
takes a per-tenant lock, and holding it on every contact would serialize a surge. The contact
row stores the decision itself when the API responds, and the outbox row that triggers this task
commits with it, so no decision goes unaudited; the entry only arrives a moment later.
"""

from __future__ import annotations

import structlog

from failover.models import Contact
from hub.core.db import unit_of_work
from hub.core.tasks import QUEUE_OVERFLOW, hub_task
from hub.core.tenancy import TenantContext
from privacy.audit import audit

log = structlog.get_logger(__name__)

AUDIT_DECISION_TASK = "failover.audit_decision"


@hub_task(AUDIT_DECISION_TASK, queue=QUEUE_OVERFLOW)
def audit_decision(contact_id: str, *, tenant_id: str) -> bool:
    """Write the audit entry of a contact's routing decision once; return whether it wrote."""
    ctx = TenantContext(tenant_id=tenant_id, actor="worker:overflow")
    with unit_of_work(ctx) as session:
        contact = session.get(Contact, contact_id, with_for_update=True)
        if contact is None or contact.decision_audited:
            return False
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
    log.info("overflow_decision_audited", contact_id=contact_id)
    return True
