"""Read paths: Open311 GET requests filters, status history, lookups by blind index.

Every function takes the tenant context; the session's tenant scope filters rows as well.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, load_only

from hub.core.clock import as_utc, utcnow
from hub.core.db import execute_in_one_round_trip
from hub.core.errors import InvalidInput
from hub.core.tenancy import TenantContext
from hub.requests.models import ServiceRequest, StatusEvent
from hub.requests.schemas import RequestQuery
from privacy.blind_index import blind_index

# Open311 GET requests defaults: the last 90 days and at most 1000 rows.
WINDOW = timedelta(days=90)
MAX_PAGE_SIZE = 1000
MAX_IDS = 1000
# Highest page number; deeper pages are better read with a narrower date window.
MAX_PAGE = 100_000


def date_window(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """Return the UTC window the spec implies: 90 days ending now, or at/after a given bound."""
    if start is not None and end is not None:
        start, end = as_utc(start), as_utc(end)
        if end < start:
            raise InvalidInput("end_date is before start_date", field="end_date")
        if end - start > WINDOW:
            raise InvalidInput(
                "start_date to end_date may not span more than 90 days", field="end_date"
            )
        return start, end
    if start is not None:
        start = as_utc(start)
        return start, start + WINDOW
    if end is not None:
        end = as_utc(end)
        return end - WINDOW, end
    return now - WINDOW, now


# The columns the public Open311 view reads. Public reads load only these: the other columns
# are ciphertexts and blind indexes the view never shows, and a page of 1,000 whole rows
# costs several times as much to fetch.
PUBLIC_COLUMNS = (
    ServiceRequest.id,
    ServiceRequest.tenant_id,
    ServiceRequest.service_code,
    ServiceRequest.status,
    ServiceRequest.resolution,
    ServiceRequest.agency_code,
    ServiceRequest.requested_at,
    ServiceRequest.updated_at,
    ServiceRequest.expected_at,
    ServiceRequest.closed_at,
    ServiceRequest.address_id,
    ServiceRequest.zipcode,
    ServiceRequest.lat,
    ServiceRequest.lon,
    ServiceRequest.duplicate_of,
    ServiceRequest.channel,
)
PUBLIC_ONLY = load_only(*PUBLIC_COLUMNS)


class PublicRow:
    """The public columns of one request, read without the ORM, with the model's attribute names."""

    __slots__ = tuple(column.key for column in PUBLIC_COLUMNS)

    def __init__(self, values: Sequence[object]) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)


_COLUMNS = ServiceRequest.__table__.c
# One request's public columns, as SQL for PostgreSQL with psycopg's `%(name)s` placeholders.
# Row-level security limits it to the scope's tenant, and the statement names the tenant too.
_PUBLIC_BY_ID_SQL = str(
    select(*(_COLUMNS[column.key] for column in PUBLIC_COLUMNS))
    .where(_COLUMNS.tenant_id == bindparam("tenant"), _COLUMNS.id == bindparam("request_id"))
    .compile(dialect=postgresql.psycopg.dialect())
)


def public_request_in_one_round_trip(
    ctx: TenantContext, request_id: str, *, engine: Engine
) -> PublicRow | None:
    """Return the public columns of the tenant's request, or None. PostgreSQL only.

    GET requests/{id} is the most frequent Open311 call, and a session spends four round
    trips on it (BEGIN, the tenant scope, the query, COMMIT) where this spends one.
    """
    rows = execute_in_one_round_trip(
        ctx, _PUBLIC_BY_ID_SQL, {"tenant": ctx.tenant_id, "request_id": request_id}, engine=engine
    )
    return PublicRow(rows[0]) if rows else None


def query_requests(
    session: Session,
    ctx: TenantContext,
    query: RequestQuery,
    *,
    now: datetime | None = None,
    public: bool = False,
) -> list[ServiceRequest]:
    """Return one page of the tenant's requests, newest first, matching the Open311 filters.

    `service_request_ids` overrides every other filter, as the GeoReport v2 spec requires.
    With `public`, only `PUBLIC_COLUMNS` are loaded.
    """
    if not 1 <= query.page_size <= MAX_PAGE_SIZE:
        raise InvalidInput(f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size")
    if not 1 <= query.page <= MAX_PAGE:
        raise InvalidInput(f"page must be between 1 and {MAX_PAGE}", field="page")

    statement = select(ServiceRequest).where(ServiceRequest.tenant_id == ctx.tenant_id)
    if query.service_request_ids:
        if len(query.service_request_ids) > MAX_IDS:
            raise InvalidInput(
                f"at most {MAX_IDS} service_request_id values per call",
                field="service_request_id",
            )
        statement = statement.where(ServiceRequest.id.in_(query.service_request_ids))
    else:
        start, end = date_window(query.start_date, query.end_date, now or utcnow())
        statement = statement.where(
            ServiceRequest.requested_at >= start, ServiceRequest.requested_at <= end
        )
        if query.service_codes:
            statement = statement.where(ServiceRequest.service_code.in_(query.service_codes))
        statuses = set(query.statuses)
        if statuses == {"open"}:
            statement = statement.where(ServiceRequest.status != "closed")
        elif statuses == {"closed"}:
            statement = statement.where(ServiceRequest.status == "closed")

    statement = (
        statement.order_by(ServiceRequest.requested_at.desc(), ServiceRequest.id)
        .offset((query.page - 1) * query.page_size)
        .limit(query.page_size)
    )
    if public:
        statement = statement.options(PUBLIC_ONLY)
    return list(session.scalars(statement).all())


def events_by_request(
    session: Session, ctx: TenantContext, request_ids: Sequence[str]
) -> dict[str, list[StatusEvent]]:
    """Load the status history of many requests in one query, oldest event first."""
    history: dict[str, list[StatusEvent]] = defaultdict(list)
    if not request_ids:
        return history
    rows = session.scalars(
        select(StatusEvent)
        .where(
            StatusEvent.tenant_id == ctx.tenant_id, StatusEvent.request_id.in_(list(request_ids))
        )
        .order_by(StatusEvent.request_id, StatusEvent.at, StatusEvent.id)
    )
    for event in rows:
        history[event.request_id].append(event)
    return history


def find_by_contact(
    session: Session,
    ctx: TenantContext,
    *,
    email: str | None = None,
    phone: str | None = None,
    limit: int = 100,
) -> list[ServiceRequest]:
    """Return the tenant's requests filed with this email or phone, newest first.

    Matches through the blind indexes under the current index key version only.
    """
    if not email and not phone:
        raise InvalidInput("give phone or email to search by", field="phone")
    conditions = []
    if email:
        index, version = blind_index(session, ctx.tenant_id, "email", email)
        conditions.append(
            (ServiceRequest.email_bidx == index) & (ServiceRequest.bidx_version == version)
        )
    if phone:
        index, version = blind_index(session, ctx.tenant_id, "phone", phone)
        conditions.append(
            (ServiceRequest.phone_bidx == index) & (ServiceRequest.bidx_version == version)
        )
    statement = (
        select(ServiceRequest)
        .where(ServiceRequest.tenant_id == ctx.tenant_id, or_(*conditions))
        .order_by(ServiceRequest.requested_at.desc())
        .limit(limit)
    )
    return list(session.scalars(statement).all())
