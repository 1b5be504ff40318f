"""Operator tools for deliveries that have not reached their agency: listing them, and
resending dead ones with `redeliver`.

`hub requests deliveries` and `hub requests redeliver` call these. The sending itself stays in
`hub.requests.routing`, and `redeliver` only hands rows back to it.

`redeliver` paces the resent deliveries per agency. It gives each row a `next_attempt_at` one
interval after the previous row of its agency and queues the routing task with the same delay.
`routing.claim_deliveries` takes only due rows, so a routing task that runs early (one queued
for another delivery of the same request) sends nothing before its time. The pace stays in
effect with several workers and needs no process of its own.

The schedule sets the earliest time of each delivery, not a limit on the workers: workers that
fall behind send the deliveries that became due meanwhile as fast as they run. The limit is the
agency's `max_deliveries_per_minute` (`hub.requests.send_slots`), which routing keeps at send
time for redelivered deliveries as for all others. With both set, redelivered deliveries go out
at the lower of the two rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, isoformat, utcnow
from hub.core.errors import InvalidInput, NotFound, shown
from hub.core.tenancy import TenantContext
from hub.requests.models import Delivery
from hub.requests.routing import queue_route
from privacy.audit import audit
from tenants.models import Agency

log = structlog.get_logger(__name__)


# Deliveries per minute to each agency when the operator gives no rate. One a second is gentle
# on a back office that has just come back, and a backlog of 1,000 still drains in about 17
# minutes.
DEFAULT_RATE_PER_MINUTE = 60.0


@dataclass
class AgencyRedelivery:
    """Dead deliveries of one agency that `redeliver` found, with their last errors and the
    times the first and the last of them are due."""

    agency: str
    deliveries: int = 0
    last_errors: set[str] = field(default_factory=set)
    first_due_at: datetime | None = None
    last_due_at: datetime | None = None


@dataclass
class Redelivery:
    """Outcome of `redeliver`: the deliveries per agency, sorted by code, their requests, and
    the pace in deliveries per minute to each agency."""

    agencies: list[AgencyRedelivery]
    requests: int
    rate_per_minute: float

    @property
    def deliveries(self) -> int:
        return sum(entry.deliveries for entry in self.agencies)


REDELIVER_ACTION = "deliveries.redeliver"
# Distinct last errors listed per agency and state.
MAX_ERRORS_SHOWN = 10


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
    where = [Delivery.tenant_id == ctx.tenant_id, Delivery.state.in_(("failed", "dead"))]
    if agency is not None:
        where.append(Delivery.destination == agency)

    # Counted and grouped in the database, so a long outage's many rows never reach Python.
    found: dict[tuple[str, str], DeliveryStanding] = {}
    counts = (
        select(
            Delivery.destination,
            Delivery.state,
            func.count(),
            func.min(Delivery.first_attempt_at),
        )
        .where(*where)
        .group_by(Delivery.destination, Delivery.state)
    )
    for destination, state, count, oldest in session.execute(counts):
        found[(destination, state)] = DeliveryStanding(
            destination,
            state,
            deliveries=count,
            oldest_first_attempt=as_utc(oldest) if oldest is not None else None,
        )
    errors = (
        select(Delivery.destination, Delivery.state, Delivery.last_error)
        .where(*where, Delivery.last_error.is_not(None), Delivery.last_error != "")
        .distinct()
    )
    for destination, state, last_error in session.execute(errors):
        # On PostgreSQL each statement reads the rows committed when it starts, so a delivery
        # that failed after the counts were read may bring an agency and state without a count.
        entry = found.get((destination, state))
        if entry is not None and len(entry.last_errors) < MAX_ERRORS_SHOWN:
            entry.last_errors.add(last_error)
    return [found[key] for key in sorted(found)]


def parse_rate(field: str, value: str) -> float:
    """Parse a rate of deliveries per minute: a finite number above 0, such as 60 or 0.5.

    Raises InvalidInput naming `field` and the value otherwise.
    """
    try:
        rate = float(value)
    except ValueError:
        rate = math.nan
    if not _is_rate(rate):
        raise InvalidInput(
            f"invalid {field} {value!r}: give the deliveries per minute to each agency as a "
            "number above 0, such as 60 or 0.5",
            field=field,
        )
    return rate


def _is_rate(value: float) -> bool:
    return math.isfinite(value) and value > 0


def redeliver(
    session: Session,
    ctx: TenantContext,
    *,
    agency: str | None = None,
    since: datetime | None = None,
    rate_per_minute: float = DEFAULT_RATE_PER_MINUTE,
    dry_run: bool = False,
) -> Redelivery:
    """Move the tenant's dead deliveries back to `pending`, schedule them at `rate_per_minute`
    per agency, queue routing of their requests and write an audit entry.

    `agency` keeps the deliveries to that agency code, and `since` those that went dead at or
    after that moment. Each row restarts with zero attempts and a new retry window, which starts
    at its first attempt, not at this call. Only `dead` rows change, so a delivery that was sent
    is never sent again, and a second run finds nothing until a delivery goes dead again. With
    `dry_run` nothing is changed or audited, and the result shows the schedule a real run would
    set. Raises NotFound when `agency` is not in the tenant's catalog, and ValueError when
    `rate_per_minute` is not a finite number above 0.
    """
    if not _is_rate(rate_per_minute):
        raise ValueError(f"rate_per_minute must be a finite number above 0, not {rate_per_minute}")
    now = utcnow()
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
    agencies = sorted({row.destination for row in rows})
    if not dry_run:
        _lock_agencies(session, ctx, agencies)
    due = _schedule(rows, _scheduled_ends(session, ctx, agencies, now), rate_per_minute, now)

    request_ids = list(dict.fromkeys(row.request_id for row in rows))
    result = Redelivery(_per_agency(rows, due), len(request_ids), rate_per_minute)
    if dry_run:
        return result

    _reschedule(session, ctx, rows, due, now)
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action=REDELIVER_ACTION,
        details={
            "agency": agency,
            "since": isoformat(since),
            "rate_per_minute": rate_per_minute,
            "deliveries": result.deliveries,
            "requests": result.requests,
            "agencies": agencies,
        },
    )
    log.info(
        "deliveries_redelivered",
        tenant_id=ctx.tenant_id,
        deliveries=result.deliveries,
        requests=result.requests,
        agencies=agencies,
        rate_per_minute=rate_per_minute,
        last_due_at=isoformat(max(due.values(), default=None)),
    )
    return result


def _per_agency(rows: Sequence[Delivery], due: dict[int, datetime]) -> list[AgencyRedelivery]:
    found: dict[str, AgencyRedelivery] = {}
    for row in rows:
        entry = found.setdefault(row.destination, AgencyRedelivery(row.destination))
        entry.deliveries += 1
        if row.last_error:
            entry.last_errors.add(row.last_error)
        if entry.first_due_at is None:
            entry.first_due_at = due[row.id]
        entry.last_due_at = due[row.id]
    return sorted(found.values(), key=lambda e: e.agency)


def _reschedule(
    session: Session,
    ctx: TenantContext,
    rows: Sequence[Delivery],
    due: dict[int, datetime],
    now: datetime,
) -> None:
    """Move the rows back to `pending` with their due times, and queue one routing task per
    request and due time."""
    for row in rows:
        row.state = "pending"
        row.attempts = 0
        row.first_attempt_at = None
        row.next_attempt_at = due[row.id]
        row.dead_at = None
    session.flush()
    # The outbox counts the delay from its own clock reading, which is later than `now`, so
    # no task is published before its deliveries are due.
    for request_id, due_at in dict.fromkeys((row.request_id, due[row.id]) for row in rows):
        delay = (due_at - now).total_seconds()
        queue_route(session, ctx.tenant_id, request_id, delay_seconds=delay)


def _lock_agencies(session: Session, ctx: TenantContext, codes: Sequence[str]) -> None:
    """Lock the agencies' catalog rows until the transaction ends, so two concurrent
    redeliveries to one agency schedule one after the other instead of side by side.

    On PostgreSQL the second waits here and then reads the first one's schedule. SQLite runs
    one write transaction at a time anyway.
    """
    if codes:
        session.execute(
            select(Agency.code)
            .where(Agency.tenant_id == ctx.tenant_id, Agency.code.in_(codes))
            .with_for_update()
        )


def _scheduled_ends(
    session: Session, ctx: TenantContext, codes: Sequence[str], now: datetime
) -> dict[str, datetime]:
    """Return, per agency, the latest due time of the deliveries that an earlier redelivery
    scheduled and that are still waiting for their first attempt.

    Such rows are `pending` with no attempt and a future `next_attempt_at`. Intake leaves
    `next_attempt_at` empty, and a claim counts an attempt. New deliveries that wait for a send
    slot under the agency's `max_deliveries_per_minute` match too, so a redelivery also starts
    after them.
    """
    if not codes:
        return {}
    rows = session.execute(
        select(Delivery.destination, func.max(Delivery.next_attempt_at))
        .where(
            Delivery.tenant_id == ctx.tenant_id,
            Delivery.destination.in_(codes),
            Delivery.state == "pending",
            Delivery.attempts == 0,
            Delivery.next_attempt_at > now,
        )
        .group_by(Delivery.destination)
    ).all()
    return {code: as_utc(last) for code, last in rows if last is not None}


def _schedule(
    rows: Sequence[Delivery],
    scheduled_ends: dict[str, datetime],
    rate_per_minute: float,
    now: datetime,
) -> dict[int, datetime]:
    """Return the due time of each row by id: per agency in the order of `rows`, one every
    60 / `rate_per_minute` seconds.

    An agency's first row is due at `now`, or one interval after the end of the agency's
    earlier schedule when one is still running, so a second run keeps to the pace.
    """
    spacing = 60.0 / rate_per_minute
    by_agency: dict[str, list[Delivery]] = {}
    for row in rows:
        by_agency.setdefault(row.destination, []).append(row)

    due: dict[int, datetime] = {}
    for code, agency_rows in by_agency.items():
        start = now
        earlier_end = scheduled_ends.get(code)
        if earlier_end is not None:
            start = max(now, earlier_end + timedelta(seconds=spacing))
        for index, row in enumerate(agency_rows):
            due[row.id] = start + timedelta(seconds=index * spacing)
    return due


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
