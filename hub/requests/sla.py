"""SLA breach detection: open requests past their expected time are marked and escalated.

`expected_at` is set at intake from the service's SLA target on the tenant's business calendar.
A breach is recorded once per request (`sla_breached_at`), with a status event on the
`sla_escalation` channel so the request's history and the agency see it, a log event and a
metric per tenant and service.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.clock import utcnow
from hub.core.tenancy import TenantContext
from hub.requests.metrics import SLA_BREACHES
from hub.requests.models import OPEN_STATES, ServiceRequest, StatusEvent

log = structlog.get_logger(__name__)

ESCALATION_CHANNEL = "sla_escalation"
ESCALATION_ACTOR = "system:sla"


def mark_breaches(
    session: Session, ctx: TenantContext, *, now: datetime | None = None, limit: int = 1000
) -> list[str]:
    """Mark up to `limit` open requests of the tenant past `expected_at`; return their ids.

    Rows already marked are skipped, so a second run at the same time changes nothing.
    """
    now = now or utcnow()
    requests = session.scalars(
        select(ServiceRequest)
        .where(
            ServiceRequest.status.in_(OPEN_STATES),
            ServiceRequest.expected_at.is_not(None),
            ServiceRequest.expected_at < now,
            ServiceRequest.sla_breached_at.is_(None),
        )
        .order_by(ServiceRequest.expected_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()

    for request in requests:
        request.sla_breached_at = now
        session.add(
            StatusEvent(
                tenant_id=ctx.tenant_id,
                request_id=request.id,
                at=now,
                status=request.status,
                actor=ESCALATION_ACTOR,
                channel=ESCALATION_CHANNEL,
            )
        )
        SLA_BREACHES.labels(tenant=ctx.tenant_id, service=request.service_code).inc()
        log.info(
            "sla_breached",
            request_id=request.id,
            service_code=request.service_code,
            agency=request.agency_code,
        )
    if requests:
        # One warning per run, not per request: an import of old open requests can mark
        # thousands at once.
        log.warning("sla_breaches_marked", tenant_id=ctx.tenant_id, requests=len(requests))
    session.flush()
    return [request.id for request in requests]
