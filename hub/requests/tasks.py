"""Celery tasks of the request lifecycle: routing, SLA checks, delivery sweeps, location sealing.

Each task is a transaction boundary (`unit_of_work`), and the functions it calls only flush.
Every task is idempotent. Routing takes only due, unsent deliveries, and the SLA check skips
requests already marked. The batch task and the sweep only enqueue more idempotent routing.
"""

from __future__ import annotations

import time

import structlog
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hub.core.db import get_engine, unit_of_work
from hub.core.outbox import enqueue_now
from hub.core.tasks import QUEUE_INTAKE, QUEUE_MAINTENANCE, hub_task
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import routing, service, sla, webhook
from hub.requests.location_sealing import seal_service_locations
from hub.requests.metrics import DELIVERY_LATENCY
from tenants.models import Tenant
from tenants.onboarding import SEAL_LOCATIONS_TASK

log = structlog.get_logger(__name__)

CHECK_SLA_TASK = "hub.requests.check_sla"
SWEEP_TASK = "hub.requests.sweep_deliveries"
WORKER_ACTOR = "worker:routing"


@hub_task(routing.ROUTE_TASK, queue=QUEUE_INTAKE)
def route(request_id: str, *, tenant_id: str) -> dict[str, int]:
    """Send the request to every destination agency that has not received it yet."""
    ctx = TenantContext(tenant_id=tenant_id, actor=WORKER_ACTOR)
    service.link_regional_duplicate(ctx, request_id)
    with unit_of_work(ctx) as session:
        claims = routing.claim_deliveries(session, ctx, request_id)

    outcomes: dict[str, int] = {}
    for claim in claims:
        with DELIVERY_LATENCY.labels(tenant=tenant_id).time():
            result = webhook.post(
                claim.url,
                claim.body,
                secret=claim.secret,
                previous_secret=claim.previous_secret,
                delivery_id=claim.public_id,
            )
        with unit_of_work(ctx) as session:
            outcome = routing.record_outcome(session, ctx, claim, result)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    log.info("request_routed", request_id=request_id, claimed=len(claims), **outcomes)
    return outcomes


# Attempts at writing a batch's routing rows, and seconds between them. The task carries the
# only routing message of its requests, so a short database outage is waited out.
ROUTE_BATCH_ATTEMPTS = 3
ROUTE_BATCH_PAUSE_SECONDS = 2.0


@hub_task(routing.ROUTE_BATCH_TASK, queue=QUEUE_INTAKE)
def route_batch(request_ids: list[str], *, tenant_id: str) -> int:
    """Queue the routing task of each request that intake stored in one transaction.

    Intake writes one message for such a batch, so the API's relay publishes once per batch
    instead of once per request. Routing stays one task per request: a slow or failing agency
    delays only its own requests. The tasks go through the outbox like every task the hub
    queues, and the next relay round of any API or worker process publishes them. When the
    database stays unreachable over every attempt the task raises, and `hub_task` retries it
    with backoff. When those retries run out too, the delivery sweep routes the requests that
    have agency deliveries, as it does after a failed `route`.
    """
    ctx = TenantContext(tenant_id=tenant_id, actor=WORKER_ACTOR)
    attempt = 1
    while True:
        try:
            with unit_of_work(ctx) as session:
                enqueue_now(
                    session,
                    routing.ROUTE_TASK,
                    queue=QUEUE_INTAKE,
                    tenant_id=tenant_id,
                    arguments=[{"request_id": request_id} for request_id in request_ids],
                )
            return len(request_ids)
        except OperationalError as exc:
            log.warning(
                "route_batch_attempt_failed",
                attempt=attempt,
                requests=len(request_ids),
                error=type(exc).__name__,
            )
            if attempt == ROUTE_BATCH_ATTEMPTS:
                log.error("route_batch_failed", request_ids=request_ids)
                raise
        attempt += 1
        time.sleep(ROUTE_BATCH_PAUSE_SECONDS)


@hub_task(CHECK_SLA_TASK, queue=QUEUE_MAINTENANCE, requires_tenant=False)
def check_sla() -> int:
    """Mark SLA breaches for every active tenant, one transaction per tenant."""
    with unit_of_work(SystemContext("sla check: list tenants"), write=False) as session:
        tenant_ids = session.scalars(select(Tenant.id).where(Tenant.status == "active")).all()

    breached = 0
    for tenant_id in tenant_ids:
        ctx = TenantContext(tenant_id=tenant_id, actor=sla.ESCALATION_ACTOR)
        with unit_of_work(ctx) as session:
            breached += len(sla.mark_breaches(session, ctx))
    log.info("sla_checked", tenants=len(tenant_ids), breached=breached)
    return breached


@hub_task(SWEEP_TASK, queue=QUEUE_MAINTENANCE, requires_tenant=False)
def sweep_deliveries() -> int:
    """Re-enqueue routing for deliveries left overdue by a dead worker or a lost message."""
    with unit_of_work(SystemContext("delivery sweep")) as session:
        pairs = routing.overdue_requests(session)
        routing.requeue(session, pairs)
    if pairs:
        log.warning("deliveries_requeued", requests=len(pairs))
    return len(pairs)


@hub_task(SEAL_LOCATIONS_TASK, queue=QUEUE_MAINTENANCE, time_limit=3600)
def seal_locations(service_code: str, *, tenant_id: str) -> int:
    """Convert the stored requests of a service that became location-sensitive.

    Onboarding queues it. Each batch commits on its own, so a run that a lost worker cut
    short converts the rest when the message is delivered again. NOTE: a run stopped by the
    time limit is not queued again, and `hub privacy seal-locations` converts the rest.
    """
    return seal_service_locations(tenant_id, service_code, engine=get_engine())
