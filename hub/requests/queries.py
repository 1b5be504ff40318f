"""Read paths: Open311 GET requests filters, status history, lookups by blind index.

Every function takes the tenant context; the session's tenant scope filters rows as well.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine, any_, bindparam, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, load_only

from hub.core.batching import Coalescer
from hub.core.clock import as_utc, utcnow
from hub.core.db import AsyncReader, async_reader, can_match_text
from hub.core.errors import ErrorCollector, InvalidInput
from hub.core.tenancy import TenantContext
from hub.requests.models import ServiceRequest, StatusEvent
from hub.requests.schemas import RequestQuery
from privacy.blind_index import blind_index

log = structlog.get_logger(__name__)

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
_PUBLIC_SELECT = select(*(_COLUMNS[column.key] for column in PUBLIC_COLUMNS)).where(
    _COLUMNS.tenant_id == bindparam("tenant")
)
_DIALECT = postgresql.psycopg.dialect()
# Public columns by id, as SQL for PostgreSQL with psycopg's `%(name)s` placeholders, for one
# request and for many. Row-level security limits them to the scope's tenant, and the
# statements name the tenant too.
_PUBLIC_BY_ID_SQL = str(
    _PUBLIC_SELECT.where(_COLUMNS.id == bindparam("request_id")).compile(dialect=_DIALECT)
)
_PUBLIC_BY_IDS_SQL = str(
    _PUBLIC_SELECT.where(_COLUMNS.id == any_(bindparam("request_ids"))).compile(dialect=_DIALECT)
)
_MAX_ID_CHARS = _COLUMNS.id.type.length


# Maximum number of ids in one batched query.
MAX_BATCH_IDS = 200


class PublicRequestBatcher:
    """Reads of one request by id that wait at the same time, as one query per tenant.

    A query runs as any single read does: its own transaction, started after every one of its
    ids was requested. A statement error that is not a lost connection is retried one id at a
    time, so one bad id fails alone.
    """

    def __init__(self, reader: AsyncReader) -> None:
        self._reader = reader
        self._coalescer: Coalescer[str, tuple[TenantContext, str], PublicRow | None] = Coalescer(
            self._read, max_in_flight=reader.size, max_batch=MAX_BATCH_IDS
        )

    async def public_request(self, ctx: TenantContext, request_id: str) -> PublicRow | None:
        if len(request_id) > _MAX_ID_CHARS or not request_id.isprintable():
            return None  # no stored id looks like this, and PostgreSQL rejects some of them
        return await self._coalescer.call(ctx.tenant_id, (ctx, request_id))

    async def _read(
        self, tenant_id: str, reads: list[tuple[TenantContext, str]]
    ) -> list[PublicRow | None | Exception]:
        scope = reads[0][0]
        request_ids = list(dict.fromkeys(request_id for _ctx, request_id in reads))
        try:
            rows = await self._fetch(scope, request_ids)
        except OperationalError:
            raise
        except DBAPIError as exc:
            if len(request_ids) == 1:
                raise
            log.warning(
                "public_read_batch_failed", tenant_id=tenant_id, ids=len(request_ids), error=exc
            )
            outcomes = {}
            for request_id in request_ids:
                try:
                    outcomes[request_id] = _first_row(await self._fetch(scope, [request_id]))
                except OperationalError:
                    raise
                except DBAPIError as single_exc:
                    outcomes[request_id] = single_exc
            return [outcomes[request_id] for _ctx, request_id in reads]
        found = {row[0]: PublicRow(row) for row in rows}
        return [found.get(request_id) for _ctx, request_id in reads]

    async def _fetch(self, scope: TenantContext, request_ids: list[str]) -> list[tuple]:
        if len(request_ids) == 1:
            params = {"tenant": scope.tenant_id, "request_id": request_ids[0]}
            return await self._reader.fetch(scope, _PUBLIC_BY_ID_SQL, params)
        params = {"tenant": scope.tenant_id, "request_ids": request_ids}
        return await self._reader.fetch(scope, _PUBLIC_BY_IDS_SQL, params)


def _first_row(rows: list[tuple]) -> PublicRow | None:
    return PublicRow(rows[0]) if rows else None


_batchers: weakref.WeakKeyDictionary[AsyncReader, PublicRequestBatcher] = (
    weakref.WeakKeyDictionary()
)


async def public_request_batched(
    ctx: TenantContext, request_id: str, *, engine: Engine
) -> PublicRow | None:
    """Return the public columns of the tenant's request, or None. PostgreSQL only.

    GET requests/{id} is the most frequent Open311 call. Its reads in one process share
    queries (`PublicRequestBatcher`) on asyncio connections, so the event loop serves other
    calls while PostgreSQL answers.
    """
    reader = async_reader(engine)
    batcher = _batchers.get(reader)
    if batcher is None:
        batcher = _batchers[reader] = PublicRequestBatcher(reader)
    return await batcher.public_request(ctx, request_id)


def check_query(query: RequestQuery) -> None:
    """Raise every problem of a parsed query together: paging out of range, too many ids, and
    dates that are out of order or span more than 90 days.

    The dates are not checked when `service_request_ids` is given, because the ids override
    them.
    """
    errors = ErrorCollector()
    if not 1 <= query.page_size <= MAX_PAGE_SIZE:
        errors.add(
            InvalidInput(f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size")
        )
    if not 1 <= query.page <= MAX_PAGE:
        errors.add(InvalidInput(f"page must be between 1 and {MAX_PAGE}", field="page"))
    if len(query.service_request_ids) > MAX_IDS:
        errors.add(
            InvalidInput(
                f"at most {MAX_IDS} service_request_id values per call",
                field="service_request_id",
            )
        )
    elif not query.service_request_ids:
        errors.check(date_window, query.start_date, query.end_date, utcnow())
    errors.raise_any()


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
    check_query(query)

    # A value that cannot match a stored one is left out of its filter, and a filter left
    # with no value matches no request.
    request_ids = [value for value in query.service_request_ids if can_match_text(value)]
    service_codes = [value for value in query.service_codes if can_match_text(value)]
    if query.service_request_ids and not request_ids:
        return []

    statement = select(ServiceRequest).where(ServiceRequest.tenant_id == ctx.tenant_id)
    if query.service_request_ids:
        statement = statement.where(ServiceRequest.id.in_(request_ids))
    else:
        start, end = date_window(query.start_date, query.end_date, now or utcnow())
        statement = statement.where(
            ServiceRequest.requested_at >= start, ServiceRequest.requested_at <= end
        )
        if query.service_codes and not service_codes:
            return []
        if query.service_codes:
            statement = statement.where(ServiceRequest.service_code.in_(service_codes))
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
