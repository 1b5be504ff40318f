"""Operator tools for deliveries that have not reached their agency: listing them, and
resending dead ones with `redeliver`.

`hub requests deliveries` and `hub requests redeliver` call these. The sending itself stays in
`hub.requests.routing`, and `redeliver` only hands rows back to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, isoformat
from hub.core.errors import NotFound, shown
from hub.core.tenancy import TenantContext
from hub.requests.models import Delivery
from hub.requests.routing import requeue
from privacy.audit import audit
from tenants.models import Agency

log = structlog.get_logger(__name__)


@dataclass
class AgencyRedelivery:
    """Dead deliveries of one agency that `redeliver` found, with their last errors."""

    agency: str
    deliveries: int = 0
    last_errors: set[str] = field(default_factory=set)


@dataclass
class Redelivery:
    """Outcome of `redeliver`: the deliveries per agency, sorted by code, and their requests."""

    agencies: list[AgencyRedelivery]
    requests: int

    @property
    def deliveries(self) -> int:
        return sum(entry.deliveries for entry in self.agencies)


REDELIVER_ACTION = "deliveries.redeliver"


@dataclass
class DeliveryStanding:
    """The deliveries of one agency in one state (`failed`: waiting for a retry, or `dead`)."""

    agency: str
    state: str
    deliveries: int = 0
    # The first attempt of the oldest one, which the retry window counts from.
    oldest_first_attempt: datetime | None = None
    last_errors: set[str] = field(default_factory=set)


def undelivered(
    session: Session, ctx: TenantContext, *, agency: str | None = None
) -> list[DeliveryStanding]:
    """Return the tenant's failed and dead deliveries per agency and state, sorted by agency.

    Operators read it while an agency's endpoint is down: a delivery waits in `failed` for its
    retries long before it is `dead`. Raises NotFound when `agency` is not in the catalog.
    """
    if agency is not None:
        _check_agency(session, ctx, agency)
    statement = select(
        Delivery.destination, Delivery.state, Delivery.last_error, Delivery.first_attempt_at
    ).where(Delivery.tenant_id == ctx.tenant_id, Delivery.state.in_(("failed", "dead")))
    if agency is not None:
        statement = statement.where(Delivery.destination == agency)

    found: dict[tuple[str, str], DeliveryStanding] = {}
    for destination, state, last_error, first_attempt_at in session.execute(statement):
        entry = found.setdefault((destination, state), DeliveryStanding(destination, state))
        entry.deliveries += 1
        if last_error:
            entry.last_errors.add(last_error)
        if first_attempt_at is not None:
            started = as_utc(first_attempt_at)
            if entry.oldest_first_attempt is None or started < entry.oldest_first_attempt:
                entry.oldest_first_attempt = started
    return [found[key] for key in sorted(found)]


def redeliver(
    session: Session,
    ctx: TenantContext,
    *,
    agency: str | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
) -> Redelivery:
    """Move the tenant's dead deliveries back to `pending`, queue routing of their requests and
    write an audit entry.

    `agency` keeps the deliveries to that agency code, and `since` those that went dead at or
    after that moment. Each row restarts with zero attempts and a new retry window. Only `dead`
    rows change, so a delivery that was sent is never sent again, and a second run finds nothing
    until a delivery goes dead again. With `dry_run` nothing is changed or audited. Raises
    NotFound when `agency` is not in the tenant's catalog.
    """
    if agency is not None:
        _check_agency(session, ctx, agency)
    statement = select(Delivery).where(
        Delivery.tenant_id == ctx.tenant_id, Delivery.state == "dead"
    )
    if agency is not None:
        statement = statement.where(Delivery.destination == agency)
    if since is not None:
        # In UTC: SQLite compares the stored UTC time with the parameter's wall-clock digits,
        # so a time with another offset would select the wrong rows.
        statement = statement.where(Delivery.dead_at >= as_utc(since))
    rows = session.scalars(statement.order_by(Delivery.id).with_for_update()).all()

    found: dict[str, AgencyRedelivery] = {}
    for row in rows:
        entry = found.setdefault(row.destination, AgencyRedelivery(row.destination))
        entry.deliveries += 1
        if row.last_error:
            entry.last_errors.add(row.last_error)
    request_ids = list(dict.fromkeys(row.request_id for row in rows))
    result = Redelivery(sorted(found.values(), key=lambda e: e.agency), len(request_ids))
    if dry_run:
        return result

    for row in rows:
        row.state = "pending"
        row.attempts = 0
        row.first_attempt_at = None
        row.next_attempt_at = None
        row.dead_at = None
    session.flush()
    requeue(session, [(ctx.tenant_id, request_id) for request_id in request_ids])
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action=REDELIVER_ACTION,
        details={
            "agency": agency,
            "since": isoformat(since),
            "deliveries": result.deliveries,
            "requests": result.requests,
            "agencies": sorted(found),
        },
    )
    log.info(
        "deliveries_redelivered",
        tenant_id=ctx.tenant_id,
        deliveries=result.deliveries,
        requests=result.requests,
        agencies=sorted(found),
    )
    return result


def _check_agency(session: Session, ctx: TenantContext, code: str) -> None:
    codes = session.scalars(
        select(Agency.code).where(Agency.tenant_id == ctx.tenant_id).order_by(Agency.code)
    ).all()
    if code not in codes:
        known = ", ".join(codes) or "none"
        raise NotFound(
            f"agency{shown(code)} not found in the catalog of tenant {ctx.tenant_id!r}; "
            f"give one of its agency codes: {known}"
        )
