"""Operator listings of a tenant's requests, newest first, with no personal data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from hub.core.errors import InvalidInput
from hub.core.tenancy import TenantContext
from hub.requests.models import OPEN_STATES, STATES, Delivery, ServiceRequest

MAX_LIST_LIMIT = 10_000
# Open311 status groups a filter may name besides the states; `closed` is also a state.
STATUS_GROUPS = {"open": OPEN_STATES, "closed": ("closed",)}


def _expand_statuses(statuses: Sequence[str]) -> list[str]:
    """Return the states that `statuses` name, with the Open311 groups `open` and `closed`
    replaced by their states; raise InvalidInput on an unknown name."""
    unknown = sorted(set(statuses) - set(STATES) - set(STATUS_GROUPS))
    if unknown:
        raise InvalidInput(
            f"unknown status {', '.join(unknown)}; use one of: {', '.join(STATES)}, or the "
            "Open311 groups open and closed",
            field="status",
        )
    states: list[str] = []
    for status in statuses:
        for state in STATUS_GROUPS.get(status, (status,)):
            if state not in states:
                states.append(state)
    return states


# Delivery states a listing may filter on: the deliveries that have not reached their agency.
UNDELIVERED_STATES = ("failed", "dead")


@dataclass(frozen=True)
class RequestFilters:
    """Filters of an operator listing; an empty filter matches every request."""

    statuses: Sequence[str] = ()
    service_codes: Sequence[str] = ()
    source: str | None = None
    # The agency each request is routed to (`ServiceRequest.agency_code`), or with
    # `deliveries`, the agency of the delivery.
    agencies: Sequence[str] = ()
    # Requests with a delivery in one of these states (`UNDELIVERED_STATES`).
    deliveries: Sequence[str] = ()


def _filtered(statement: Select[Any], ctx: TenantContext, filters: RequestFilters) -> Select[Any]:
    states = _expand_statuses(filters.statuses)
    unknown = sorted(set(filters.deliveries) - set(UNDELIVERED_STATES))
    if unknown:
        raise InvalidInput(
            f"unknown delivery state {', '.join(unknown)}; use {' or '.join(UNDELIVERED_STATES)}",
            field="delivery",
        )
    statement = statement.where(ServiceRequest.tenant_id == ctx.tenant_id)
    if states:
        statement = statement.where(ServiceRequest.status.in_(states))
    if filters.service_codes:
        statement = statement.where(ServiceRequest.service_code.in_(list(filters.service_codes)))
    if filters.source is not None:
        statement = statement.where(ServiceRequest.source == filters.source)
    if filters.deliveries:
        # A request can go to several agencies, so with delivery states the agencies filter
        # the deliveries, not the agency that the request is routed to.
        undelivered = select(Delivery.id).where(
            Delivery.tenant_id == ctx.tenant_id,
            Delivery.request_id == ServiceRequest.id,
            Delivery.state.in_(list(filters.deliveries)),
        )
        if filters.agencies:
            undelivered = undelivered.where(Delivery.destination.in_(list(filters.agencies)))
        statement = statement.where(undelivered.exists())
    elif filters.agencies:
        statement = statement.where(ServiceRequest.agency_code.in_(list(filters.agencies)))
    return statement


def list_requests(
    session: Session, ctx: TenantContext, filters: RequestFilters, *, limit: int = 50
) -> list[ServiceRequest]:
    """Return up to `limit` of the tenant's requests that match `filters`, newest first."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    statement = _filtered(select(ServiceRequest), ctx, filters)
    statement = statement.order_by(ServiceRequest.requested_at.desc(), ServiceRequest.id)
    return list(session.scalars(statement.limit(limit)))


def count_requests(session: Session, ctx: TenantContext, filters: RequestFilters) -> int:
    """Return how many of the tenant's requests match `filters`."""
    base = select(func.count()).select_from(ServiceRequest)
    return int(session.scalar(_filtered(base, ctx, filters)) or 0)


def open_requests_by_agency(
    session: Session, tenant_id: str, agencies: Sequence[str]
) -> dict[str, int]:
    """Return how many open requests of the tenant each of `agencies` has, leaving out
    agencies with none."""
    if not agencies:
        return {}
    query = (
        select(ServiceRequest.agency_code, func.count())
        .where(
            ServiceRequest.tenant_id == tenant_id,
            ServiceRequest.agency_code.in_(list(agencies)),
            ServiceRequest.status.in_(OPEN_STATES),
        )
        .group_by(ServiceRequest.agency_code)
    )
    return {code: count for code, count in session.execute(query).all()}
