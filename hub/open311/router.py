"""GeoReport v2 endpoints at `/open311/v2/`, one multi-jurisdiction endpoint for every tenant.

Each path takes a `.json` or `.xml` suffix. `jurisdiction_id` (the city's domain) is required:
empty counts as missing (400) and an unknown one is 404. Reads are public and anonymized;
POST requests needs an api_key with the open311 role, and servicerequestupdates one with the
agency role, which updates only the requests routed to the key's agencies. Errors come out as
the spec's error list through the renderer in `formats`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError

from hub.core.clock import as_utc, isoformat, utcnow
from hub.core.db import get_engine, is_postgres, unit_of_work
from hub.core.errors import (
    ErrorCollector,
    Forbidden,
    HubError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    shown,
)
from hub.core.tenancy import ROLE_AGENCY, ROLE_AGENT, ROLE_OPEN311, ROLE_STAFF, TenantContext
from hub.open311 import formats, intake, params, ratelimit, views
from hub.requests import queries, service
from hub.requests.catalog import TenantSnapshot
from hub.requests.metrics import INTAKE
from hub.requests.models import STATES
from hub.requests.schemas import IntakeData, IntakeJob, RequestQuery
from hub.requests.validation import check_text
from tenants.auth import credential_for_tenant, request_id_of
from tenants.keys import ApiCredential
from tenants.profile import profile_for
from tenants.registry import get_tenant_by_jurisdiction

log = structlog.get_logger(__name__)

PREFIX = "/open311/v2"
# The date of the last change to this endpoint's methods, written like every other date.
CHANGESET = "2026-12-04T00:00:00+00:00"
# Roles that may file requests, and roles that may post agency status updates.
INTAKE_ROLES = frozenset({ROLE_OPEN311, ROLE_AGENT, ROLE_STAFF})
UPDATE_ROLES = frozenset({ROLE_AGENCY})

router = APIRouter(prefix=PREFIX, tags=["open311"])

Items = list[tuple[str, str]]


def _format(fmt: str) -> str:
    if fmt not in formats.FORMATS:
        raise NotFound("unknown format; use .json or .xml", code="unknown_format")
    return fmt


def _tenant(jurisdiction_id: str | None) -> TenantSnapshot:
    if jurisdiction_id is None or not jurisdiction_id.strip():
        raise InvalidInput("jurisdiction_id is required", code="missing_jurisdiction")
    tenant = get_tenant_by_jurisdiction(jurisdiction_id.strip())
    # An offboarded tenant's jurisdiction is served no more, the same as an unknown one.
    if tenant is None or not tenant.active:
        raise NotFound(
            f"jurisdiction_id{shown(jurisdiction_id.strip())} is not served by this endpoint; "
            "check it against the jurisdiction_id that the city publishes",
            code="unknown_jurisdiction",
        )
    return tenant


def _language(request: Request, items: Items, tenant: TenantSnapshot) -> params.Language:
    return params.language(
        params.first(items, "locale"), request.headers.get("accept-language"), profile_for(tenant)
    )


def _public_context(tenant: TenantSnapshot, request: Request) -> TenantContext:
    request.state.tenant_id = tenant.id
    return TenantContext(tenant.id, actor="open311:public")


def _authenticate(
    request: Request, tenant: TenantSnapshot, raw_key: str | None, roles: frozenset[str]
) -> tuple[TenantContext, ApiCredential]:
    """Return the context and credential of an api_key valid for this jurisdiction and role."""
    credential = credential_for_tenant(raw_key, tenant.id, any_of=roles)
    return credential.context(request_id_of(request)), credential


def _media_type(content_type: str) -> str:
    """Return the media type of a Content-Type header for a message, without parameters."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if len(media_type) > 100 or not media_type.isprintable():
        return "another type"
    return media_type


async def _form_items(request: Request) -> Items:
    """Query and form parameters in order; the body size limit holds for chunked bodies too.

    GeoReport v2 POST methods take form fields, so a body of any other type (such as JSON) is
    rejected instead of being read as no fields at all.
    """
    limit = request.app.state.settings.max_body_bytes
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    items = list(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "")
    # Type and subtype of a media type are case-insensitive (RFC 9110).
    declared_type = content_type.split(";", 1)[0].strip().lower()
    if declared_type == "application/x-www-form-urlencoded":
        items.extend(params.urlencoded_items(body))
    elif declared_type == "multipart/form-data":
        try:
            form = await request.form()
        except (ValueError, AssertionError) as exc:
            log.info("open311_form_unreadable", error=type(exc).__name__)
            raise InvalidInput("the form body could not be parsed") from None
        for key, value in form.multi_items():
            if not isinstance(value, str):
                raise InvalidInput("file uploads are not accepted; send media_url instead")
            items.append((key, value))
    elif body:
        media_type = _media_type(content_type) if content_type else "no declared type"
        raise InvalidInput(
            f"POST {request.url.path.rsplit('/', 1)[-1]} takes form fields, not a body of "
            f"{media_type}; send them as application/x-www-form-urlencoded or "
            "multipart/form-data",
            code="unsupported_media_type",
        )
    return items


# --- discovery and services --------------------------------------------------------------


@router.get("/discovery.{fmt}")
def discovery(fmt: str, request: Request, jurisdiction_id: str | None = None) -> Response:
    fmt = _format(fmt)
    tenant = _tenant(jurisdiction_id) if jurisdiction_id is not None else None
    base_url = str(request.base_url).rstrip("/") + PREFIX + "/"
    return formats.render(fmt, "discovery", views.discovery(base_url, tenant, CHANGESET))


@router.get("/services.{fmt}")
def services(fmt: str, request: Request) -> Response:
    fmt = _format(fmt)
    items = list(request.query_params.multi_items())
    tenant = _tenant(params.first(items, "jurisdiction_id"))
    request.state.tenant_id = tenant.id
    language = _language(request, items, tenant)
    body = views.service_list(tenant, language.tag)
    return formats.render(fmt, "services", body, headers=language.headers())


@router.get("/services/{service_code}.{fmt}")
def service_definition(service_code: str, fmt: str, request: Request) -> Response:
    fmt = _format(fmt)
    items = list(request.query_params.multi_items())
    tenant = _tenant(params.first(items, "jurisdiction_id"))
    request.state.tenant_id = tenant.id
    definition = service.active_service(tenant, service_code)
    language = _language(request, items, tenant)
    body = views.service_definition(tenant, definition, language.tag)
    return formats.render(fmt, "service_definition", body, headers=language.headers())


# --- POST requests -----------------------------------------------------------------------


def intake_data(items: Items, api_key_id: int | None) -> IntakeData:
    """Return the fields of a POST requests call.

    A missing service_code is raised at once, because the service's attributes cannot be
    checked without it. The other problems of the form are collected in `form_errors`, for
    validation to report with its own.
    """
    service_code = params.optional_text(items, "service_code")
    if service_code is None:
        raise InvalidInput("service_code is required", field="service_code")
    errors: list[InvalidInput] = []
    # The location is one field: a lat that is not a number is reported, and long is not
    # parsed.
    try:
        lat = params.coordinate(items, "lat")
        lon = params.coordinate(items, "long")
    except InvalidInput as exc:
        lat = lon = None
        errors.append(exc)
    attributes = params.attributes(items, errors)
    return IntakeData(
        service_code=service_code,
        lat=lat,
        lon=lon,
        address=params.optional_text(items, "address_string"),
        address_id=params.optional_text(items, "address_id"),
        zipcode=params.optional_text(items, "zipcode"),
        description=params.optional_text(items, "description"),
        first_name=params.optional_text(items, "first_name"),
        last_name=params.optional_text(items, "last_name"),
        email=params.optional_text(items, "email"),
        phone=params.optional_text(items, "phone"),
        device_id=params.optional_text(items, "device_id"),
        account_id=params.optional_text(items, "account_id"),
        media_url=params.optional_text(items, "media_url"),
        attributes=attributes,
        channel="api",
        source="open311",
        api_key_id=api_key_id,
        form_errors=errors,
    )


@router.post("/requests.{fmt}")
async def post_request(fmt: str, request: Request) -> Response:
    fmt = _format(fmt)
    items = await _form_items(request)
    tenant = _tenant(params.first(items, "jurisdiction_id"))
    request.state.tenant_id = tenant.id
    try:
        ctx, credential = _authenticate(
            request, tenant, params.first(items, "api_key"), INTAKE_ROLES
        )
        key = params.idempotency_key(request.headers.get("idempotency-key"))
        data = intake_data(items, credential.key_id)
    except HubError:
        INTAKE.labels(tenant=tenant.id, outcome="rejected").inc()
        raise
    limiter: ratelimit.PostLimiter = request.app.state.post_limiter
    per_minute = ratelimit.post_limit(tenant, credential)
    limit = None if per_minute is None else (credential.key_id, per_minute)
    if limit is not None:
        # A key known to be over its limit is rejected here, without a database round trip.
        limiter.check(tenant.id, *limit)
    degraded_check: Callable[[], bool] = request.app.state.open311_degraded
    language = _language(request, items, tenant)
    job = IntakeJob(
        ctx=ctx,
        data=data,
        idempotency_key=key,
        request_hash=service.body_hash(items),
        degraded=degraded_check(),
        language=language.tag,
    )
    result = await intake.submit(tenant, job, limit=limit, limiter=limiter)
    # A replay repeats the notice stored in the first call's language, which may differ.
    headers = None if result.replayed else language.headers()
    return formats.render(
        fmt, "service_requests", [result.as_open311()], status=201, headers=headers
    )


# --- tokens and GET requests -------------------------------------------------------------


@router.get("/tokens/{token}.{fmt}")
def get_token(token: str, fmt: str, request: Request) -> Response:
    fmt = _format(fmt)
    items = list(request.query_params.multi_items())
    tenant = _tenant(params.first(items, "jurisdiction_id"))
    ctx = _public_context(tenant, request)
    with unit_of_work(ctx, write=False) as session:
        row = service.resolve_token(session, ctx, token)
    body = [{"service_request_id": row.request_id, "token": row.token}]
    return formats.render(fmt, "service_requests", body)


def _query(items: Items) -> RequestQuery:
    """Parse the filters of GET requests, raising every problem of them together.

    A filter that fails to parse takes its default in the query, so that `check_query` still
    checks how the other filters fit together.
    """
    errors = ErrorCollector()
    start_date = errors.check(params.date_param, params.first(items, "start_date"), "start_date")
    end_date = errors.check(params.date_param, params.first(items, "end_date"), "end_date")
    statuses = errors.check(params.statuses, params.first(items, "status"))
    page = errors.check(
        params.positive_int, params.first(items, "page"), "page", 1, queries.MAX_PAGE
    )
    page_size = errors.check(
        params.positive_int,
        params.first(items, "page_size"),
        "page_size",
        queries.MAX_PAGE_SIZE,
        queries.MAX_PAGE_SIZE,
    )
    query = RequestQuery(
        service_request_ids=params.comma_list(params.first(items, "service_request_id")),
        service_codes=params.comma_list(params.first(items, "service_code")),
        start_date=start_date,
        end_date=end_date,
        statuses=statuses or [],
        page=page or 1,
        page_size=page_size or queries.MAX_PAGE_SIZE,
    )
    errors.check(queries.check_query, query)
    errors.raise_any()
    return query


def _extensions(items: Items) -> bool:
    return (params.first(items, "extensions") or "").lower() in ("true", "1", "yes")


@router.get("/requests.{fmt}")
def get_requests(fmt: str, request: Request) -> Response:
    fmt = _format(fmt)
    items = list(request.query_params.multi_items())
    tenant = _tenant(params.first(items, "jurisdiction_id"))
    ctx = _public_context(tenant, request)
    query = _query(items)
    extended = _extensions(items)
    language = _language(request, items, tenant)
    with unit_of_work(ctx, write=False) as session:
        rows = queries.query_requests(session, ctx, query, public=True)
        history = (
            queries.events_by_request(session, ctx, [row.id for row in rows]) if extended else {}
        )
        body = [
            views.request_entry(
                tenant, row, language.tag, events=history.get(row.id, []) if extended else None
            )
            for row in rows
        ]
    return formats.render(fmt, "service_requests", body, headers=language.headers())


def _documented_path(*names: str) -> dict:
    """Return the OpenAPI entries of path parameters that an endpoint reads from `request`."""
    return {
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names
        ]
    }


# The route reads its path parameters itself, because FastAPI's validation of declared ones
# cost a tenth of a GET's CPU time.
@router.get("/requests/{request_id}.{fmt}", openapi_extra=_documented_path("request_id", "fmt"))
async def get_request(request: Request) -> Response:
    request_id = request.path_params["request_id"]
    fmt = _format(request.path_params["fmt"])
    items = list(request.query_params.multi_items())
    tenant = _tenant(params.first(items, "jurisdiction_id"))
    ctx = _public_context(tenant, request)
    language = _language(request, items, tenant)
    extended = _extensions(items)
    engine = get_engine()
    if extended or not is_postgres(engine):
        body = await run_in_threadpool(
            _request_with_session, tenant, ctx, request_id, language.tag, extended
        )
        return formats.render(fmt, "service_requests", body, headers=language.headers())
    # Concurrent reads share queries on asyncio connections: a thread hand-off per read would
    # cost more than the read.
    row = await queries.public_request_batched(ctx, request_id, engine=engine)
    if row is None:
        raise service.request_not_found(request_id)
    body = [views.request_entry(tenant, row, language.tag)]
    return formats.render(fmt, "service_requests", body, headers=language.headers())


def _request_with_session(
    tenant: TenantSnapshot, ctx: TenantContext, request_id: str, language: str, extended: bool
) -> list[dict]:
    """Read the request, with its status history when the caller asked for extensions."""
    with unit_of_work(ctx, write=False) as session:
        row = service.get_request(session, ctx, request_id, public=True)
        events = None
        if extended:
            events = queries.events_by_request(session, ctx, [row.id]).get(row.id, [])
        return [views.request_entry(tenant, row, language, events=events)]


# --- agency status updates ---------------------------------------------------------------

# Open311 statuses map onto the lifecycle; the lifecycle's own names are accepted as they are.
_UPDATE_STATUS = {"open": "in_progress"}
_ACCEPTED_STATUSES = (*_UPDATE_STATUS, *STATES)


def _update_time(items: Items) -> datetime | None:
    """Return the update's `updated_datetime`, rejecting one later than the server clock allows."""
    updated = params.date_param(params.first(items, "updated_datetime"), "updated_datetime")
    if updated is None:
        return None
    now = utcnow()
    if as_utc(updated) > now + service.MAX_CLOCK_SKEW:
        raise InvalidInput(
            f"updated_datetime is more than {service.MAX_CLOCK_SKEW_MINUTES} minutes ahead of "
            f"the server clock "
            f"({isoformat(now)}); send the time the update was made, with its UTC offset",
            field="updated_datetime",
        )
    return updated


def _update_agencies(credential: ApiCredential) -> frozenset[str]:
    """Return the agencies whose requests an agency key may update.

    Raises Forbidden for an agency key that names no agency, because such a key was created
    before agency keys named their agencies and must be replaced.
    """
    if not credential.agencies:
        log.info(
            "api_key_without_agencies",
            tenant_id=credential.tenant_id,
            key_id=credential.key_id,
        )
        raise Forbidden(
            f"agency key {credential.key_id} names no agency, so it cannot post updates; ask "
            "the city to create a key with `hub tenants keys create --role agency --agency "
            "CODE` and to revoke this one",
            code="key_without_agency",
        )
    return credential.agencies


def _update_fields(items: Items) -> tuple[str, str, str, str | None, datetime | None, str | None]:
    """Return the request id, update id, status, resolution, time and description of an update.

    Every problem of these fields is raised together. The checks that need the stored request
    (not found, a reused update_id, a transition the lifecycle forbids) come after them.
    """
    errors = ErrorCollector()
    request_id = params.optional_text(items, "service_request_id")
    if request_id is None:
        errors.add(InvalidInput("service_request_id is required", field="service_request_id"))

    update_id = params.optional_text(items, "update_id")
    if update_id is None:
        errors.add(InvalidInput("update_id is required", field="update_id"))
    errors.check(check_text, "update_id", update_id, max_chars=service.MAX_UPDATE_ID_CHARS)

    raw_status = params.optional_text(items, "status")
    status = None
    if raw_status is None:
        errors.add(InvalidInput("status is required", field="status"))
    elif raw_status not in _ACCEPTED_STATUSES:
        errors.add(
            InvalidInput(f"status must be one of {', '.join(_ACCEPTED_STATUSES)}", field="status")
        )
    else:
        status = _UPDATE_STATUS.get(raw_status, raw_status)
    resolution = params.optional_text(items, "resolution")
    if status == "closed" and resolution is None:
        resolution = "fixed"
    updated = errors.check(_update_time, items)
    description = params.optional_text(items, "description")
    # The service checks the text as the event's note; this names the Open311 field instead.
    errors.check(
        service.check_update_fields, status, resolution, description, note_field="description"
    )
    errors.raise_any()
    # raise_any returned, so the request id, update id and status are set.
    return request_id or "", update_id or "", status or "", resolution, updated, description


def _post_update(ctx: TenantContext, agencies: frozenset[str], items: Items) -> dict:
    request_id, update_id, status, resolution, updated, description = _update_fields(items)

    def post() -> tuple[str, bool, str, bool]:
        with unit_of_work(ctx) as session:
            event, created = service.post_status_update(
                session,
                ctx,
                request_id,
                status,
                note=description,
                update_id=update_id,
                resolution=resolution,
                channel="agency",
                at=updated,
                agencies=agencies,
            )
            current_status, superseded = service.update_outcome(session, ctx, event)
            return event.request_id, created, current_status, superseded

    try:
        event_request_id, created, current_status, superseded = post()
    except IntegrityError:
        # A concurrent delivery of the same update_id committed first, so the second try finds
        # it and returns the response of a resend. It passes every field, so that an update
        # whose first try failed for another reason is stored whole.
        log.info("status_update_race", tenant_id=ctx.tenant_id, request_id=request_id)
        event_request_id, created, current_status, superseded = post()

    # The status is the request's current one. It differs from this update's status when an
    # event dated after the update set it, and then `superseded` is true.
    return {
        "service_request_id": event_request_id,
        "update_id": update_id,
        "status": "closed" if current_status == "closed" else "open",
        "status_detail": current_status,
        "duplicate": not created,
        "superseded": superseded,
    }


@router.post("/servicerequestupdates.{fmt}")
async def post_update(fmt: str, request: Request) -> Response:
    fmt = _format(fmt)
    items = await _form_items(request)
    tenant = _tenant(params.first(items, "jurisdiction_id"))
    request.state.tenant_id = tenant.id
    ctx, credential = _authenticate(request, tenant, params.first(items, "api_key"), UPDATE_ROLES)
    agencies = _update_agencies(credential)
    body = await run_in_threadpool(_post_update, ctx, agencies, items)
    return formats.render(fmt, "service_request_updates", [body], status=200)


def install(app: FastAPI, *, degraded: Callable[[], bool]) -> None:
    """Mount the endpoints, the Open311 error format, the intake degradation check and the
    process's POST rate limiter."""
    app.state.open311_degraded = degraded
    app.state.post_limiter = ratelimit.PostLimiter()
    app.state.error_renderers.append(("/open311/", formats.render_error))
    # FastAPI tries a router's routes in order, twice per call. GET and POST requests are the
    # busiest calls, so their routes go first.
    router.routes.sort(key=_busiest_first)
    app.include_router(router)


_BUSIEST_PATHS = (f"{PREFIX}/requests/{{request_id}}.{{fmt}}", f"{PREFIX}/requests.{{fmt}}")


def _busiest_first(route: object) -> int:
    path = getattr(route, "path", "")
    return _BUSIEST_PATHS.index(path) if path in _BUSIEST_PATHS else len(_BUSIEST_PATHS)
