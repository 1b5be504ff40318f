"""Operator listings of a tenant's requests, newest first, with no personal data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from hub.core.errors import InvalidInput
from hub.core.tenancy import TenantContext
from hub.requests.models import OPEN_STATES, STATES, ServiceRequest

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


def _filtered(
    statement: Select[Any],
    ctx: TenantContext,
    statuses: Sequence[str],
    service_codes: Sequence[str],
    source: str | None,
) -> Select[Any]:
    states = _expand_statuses(statuses)
    statement = statement.where(ServiceRequest.tenant_id == ctx.tenant_id)
    if states:
        statement = statement.where(ServiceRequest.status.in_(states))
    if service_codes:
        statement = statement.where(ServiceRequest.service_code.in_(list(service_codes)))
    if source is not None:
        statement = statement.where(ServiceRequest.source == source)
    return statement


def list_requests(
    session: Session,
    ctx: TenantContext,
    *,
    statuses: Sequence[str] = (),
    service_codes: Sequence[str] = (),
    source: str | None = None,
    limit: int = 50,
) -> list[ServiceRequest]:
    """Return up to `limit` of the tenant's requests, newest first, filtered by state."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    statement = _filtered(select(ServiceRequest), ctx, statuses, service_codes, source)
    statement = statement.order_by(ServiceRequest.requested_at.desc(), ServiceRequest.id)
    return list(session.scalars(statement.limit(limit)))


def count_requests(
    session: Session,
    ctx: TenantContext,
    *,
    statuses: Sequence[str] = (),
    service_codes: Sequence[str] = (),
    source: str | None = None,
) -> int:
    """Return how many of the tenant's requests match the same filters as `list_requests`."""
    base = select(func.count()).select_from(ServiceRequest)
    statement = _filtered(base, ctx, statuses, service_codes, source)
    return int(session.scalar(statement) or 0)
