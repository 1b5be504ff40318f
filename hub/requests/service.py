"""Intake and status updates of service requests, inside the caller's transaction.

`submit_request` validates a new request against the tenant's catalog and encrypts its personal
fields under the tenant's data key, bound to the new row id. It then writes the request, its
first status event, one delivery per destination agency and the routing task's outbox row. The
caller's boundary (API call, importer, task) commits, and nothing here does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, isoformat, utcnow
from hub.core.db import can_match_text, unit_of_work
from hub.core.errors import (
    PLAIN_CODE,
    Conflict,
    ErrorCollector,
    HubError,
    InvalidInput,
    NotFound,
    shown,
)
from hub.core.ids import new_token, tracking_code
from hub.core.outbox import enqueue_now
from hub.core.tasks import QUEUE_INTAKE
from hub.core.tenancy import TenantContext
from hub.requests import catalog, queries
from hub.requests.catalog import CatalogService, TenantSnapshot
from hub.requests.duplicates import find_regional_duplicate, link_duplicates, point_of
from hub.requests.metrics import INTAKE, STATUS_UPDATES
from hub.requests.models import (
    RESOLUTIONS,
    STATES,
    UPDATE_CHANNELS,
    Delivery,
    IdempotencyRecord,
    RequestToken,
    ServiceRequest,
    StatusEvent,
)
from hub.requests.records import (
    REQUESTS_TABLE,
    PersonalFields,
    seal_event_note,
    sealed_request_columns,
)
from hub.requests.routing import ROUTE_BATCH_TASK, ROUTE_TASK
from hub.requests.schemas import IntakeData, IntakeJob, IntakeResult
from hub.requests.texts import format_notice, notice_text
from hub.requests.validation import MAX_DESCRIPTION_CHARS, check_intake, check_text
from privacy.access import check_caller
from privacy.audit import audit
from privacy.blind_index import blind_index, blind_index_normalized
from privacy.fields import FieldCipher
from tenants.models import Tenant
from tenants.registry import tenants_in_region

log = structlog.get_logger(__name__)


_INSERT_REQUEST = insert(ServiceRequest.__table__)
_INSERT_EVENT = insert(StatusEvent.__table__)
_INSERT_DELIVERY = insert(Delivery.__table__)

# Allowed status changes. A repeated status is a note-only update; reopening a closed request
# moves it back to in_progress.
TRANSITIONS: dict[str, frozenset[str]] = {
    "submitted": frozenset({"submitted", "acknowledged", "in_progress", "on_hold", "closed"}),
    "acknowledged": frozenset({"acknowledged", "in_progress", "on_hold", "closed"}),
    "in_progress": frozenset({"in_progress", "on_hold", "closed"}),
    "on_hold": frozenset({"on_hold", "in_progress", "closed"}),
    "closed": frozenset({"closed", "in_progress"}),
}


def active_service(tenant: TenantSnapshot, service_code: str) -> CatalogService:
    service = tenant.services.get(service_code)
    if service is None:
        raise NotFound(
            f"service_code{shown(service_code)} is not in this jurisdiction's catalog; "
            "GET services for the list",
            code="unknown_service",
        )
    return service


def link_regional_duplicate(
    ctx: TenantContext, request_id: str, *, engine: Engine | None = None
) -> str | None:
    """Link a stored request to an older open request of another tenant in its region.

    The routing task calls this after intake: the search reads across tenants in a
    system-scoped session of its own, which the intake transaction must not hold open. Only
    requests filed before this one are candidates, so two reports filed at the same moment
    in two cities never point at each other. Returns the linked id, or None.
    """
    with unit_of_work(ctx, engine=engine, write=False) as session:
        region = session.scalar(select(Tenant.region).where(Tenant.id == ctx.tenant_id))
        row = session.execute(
            select(
                ServiceRequest.service_code,
                ServiceRequest.lat,
                ServiceRequest.lon,
                ServiceRequest.h3_cell,
                ServiceRequest.requested_at,
                ServiceRequest.duplicate_of,
            ).where(ServiceRequest.id == request_id)
        ).one_or_none()
    if not region or row is None or row.duplicate_of is not None or row.h3_cell is None:
        return None
    members = tenants_in_region(region, engine=engine)
    tenant = next((info for info in members if info.id == ctx.tenant_id), None)
    if tenant is None:
        return None  # an offboarded tenant's requests are not linked
    lat, lon = point_of(row)
    original = find_regional_duplicate(
        engine,
        tenant,
        [info.id for info in members],
        row.service_code,
        lat,
        lon,
        exclude=request_id,
        before=row.requested_at,
    )
    if original is None:
        return None
    with unit_of_work(ctx, engine=engine) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == request_id, ServiceRequest.duplicate_of.is_(None))
            .values(duplicate_of=original)
        )
    return original


@dataclass(frozen=True)
class PreparedRequest:
    """The rows of one validated and encrypted new request, not written yet."""

    row: dict[str, Any]
    event: dict[str, Any]
    deliveries: list[dict[str, Any]]
    # The exact location, which the duplicate search uses, or None.
    point: tuple[float, float] | None


def prepare_request(
    session: Session,
    ctx: TenantContext,
    tenant: TenantSnapshot,
    data: IntakeData,
    *,
    request_id: str | None = None,
) -> PreparedRequest:
    """Validate one new request and encrypt its personal fields.

    Only reads run here, so a request that fails validation leaves the transaction as it was.
    `link_duplicates` then sets the row's `duplicate_of`.
    """
    if ctx.tenant_id != tenant.id:
        raise NotFound("tenant not found", code="unknown_jurisdiction")
    service = active_service(tenant, data.service_code)
    attributes, email, phone = check_intake(tenant, service, data)

    now = utcnow()
    requested_at = as_utc(data.requested_at) if data.requested_at else now
    request_id = request_id or tracking_code()
    cipher = FieldCipher.for_tenant(session, tenant.id)

    # Each lookup reads the tenant's key rows, so anonymous requests skip both.
    email_bidx = phone_bidx = bidx_version = None
    if email:
        email_bidx, bidx_version = blind_index_normalized(session, tenant.id, "email", email)
    if phone:
        phone_bidx, bidx_version = blind_index_normalized(session, tenant.id, "phone", phone)
    device_bidx = None
    if data.device_id:
        device_bidx, bidx_version = blind_index_normalized(
            session, tenant.id, "device_id", data.device_id
        )

    personal = PersonalFields(
        description=data.description,
        address=data.address,
        address_id=data.address_id,
        account_id=data.account_id,
        first_name=data.first_name,
        last_name=data.last_name,
        email=data.email,
        phone=data.phone,
        media_url=data.media_url,
        attributes=attributes,
    )
    sealed = sealed_request_columns(
        cipher, tenant, service, request_id, personal, data.lat, data.lon
    )
    expected_at = catalog.expected_at(tenant, service, requested_at)
    destinations = catalog.destinations(tenant, service)
    row = {
        "id": request_id,
        "tenant_id": tenant.id,
        "service_code": service.code,
        "status": "submitted",
        "agency_code": destinations[0] if destinations else None,
        "requested_at": requested_at,
        "updated_at": now,
        "expected_at": expected_at,
        "zipcode": data.zipcode,
        **sealed,
        "email_bidx": email_bidx,
        "phone_bidx": phone_bidx,
        "bidx_version": bidx_version,
        "channel": data.channel,
        "source": data.source,
        "source_id": data.source_id,
        "device_id_bidx": device_bidx,
        "api_key_id": data.api_key_id,
        "duplicate_of": None,
    }
    event = {
        "tenant_id": tenant.id,
        "request_id": request_id,
        "at": requested_at,
        "status": "submitted",
        "actor": ctx.actor,
        "channel": data.channel,
    }
    deliveries = [
        {"tenant_id": tenant.id, "request_id": request_id, "destination": destination}
        for destination in destinations
    ]
    # A location-sensitive request stores no cell (`stored_cell`), so it is not linked.
    point = None if sealed["h3_cell"] is None else (data.lat, data.lon)
    return PreparedRequest(row, event, deliveries, point)


def store_requests(session: Session, tenant_id: str, prepared: Sequence[PreparedRequest]) -> None:
    """Write prepared requests of one tenant with their first events, deliveries and routing
    tasks, as one statement per table in foreign-key order.

    Statements instead of ORM instances: flushing four instances per request was a third of a
    POST's CPU time.
    """
    if any(item.row["tenant_id"] != tenant_id for item in prepared):
        raise ValueError(f"prepared requests of another tenant than {tenant_id} cannot be stored")
    session.execute(_INSERT_REQUEST, [item.row for item in prepared])
    session.execute(_INSERT_EVENT, [item.event for item in prepared])
    deliveries = [delivery for item in prepared for delivery in item.deliveries]
    if deliveries:
        session.execute(_INSERT_DELIVERY, deliveries)
    # One routing message per batch, because the API's relay publishes messages one at a time.
    # With the embedded broker, a message per request was about a third of a POST's API CPU time.
    request_ids = [item.row["id"] for item in prepared]
    if len(request_ids) == 1:
        task, arguments = ROUTE_TASK, {"request_id": request_ids[0]}
    else:
        task, arguments = ROUTE_BATCH_TASK, {"request_ids": request_ids}
    enqueue_now(session, task, queue=QUEUE_INTAKE, tenant_id=tenant_id, arguments=[arguments])


def submit_request(
    session: Session,
    ctx: TenantContext,
    tenant: TenantSnapshot,
    data: IntakeData,
    *,
    request_id: str | None = None,
) -> ServiceRequest:
    """Validate and store one new request with its first event, deliveries and routing task.

    A duplicate within the tenant is linked here, and one in another tenant of the region by
    the routing task (`link_regional_duplicate`). The returned instance is not
    attached to the session.
    """
    prepared = prepare_request(session, ctx, tenant, data, request_id=request_id)
    link_duplicates(session, tenant, [prepared.row], [prepared.point])
    store_requests(session, tenant.id, [prepared])
    INTAKE.labels(tenant=tenant.id, outcome="accepted").inc()
    _log_submitted(prepared.row)
    return ServiceRequest(**prepared.row)


def service_notice(
    tenant: TenantSnapshot, expected_at: datetime | None, language: str | None, *, token: bool
) -> str:
    if token:
        return notice_text(tenant, language, "notice.token")
    if expected_at is None:
        return notice_text(tenant, language, "notice.received")
    expected = catalog.local_time(tenant, expected_at).strftime("%Y-%m-%d %H:%M %Z")
    return format_notice(tenant, language, "notice.expected", expected=expected)


def body_hash(items: list[tuple[str, str]]) -> str:
    """Return a digest of the form fields that identifies one submission (api_key excluded)."""
    canonical = sorted((k, v) for k, v in items if k != "api_key")
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False).encode()).hexdigest()


def find_idempotent_result(session: Session, job: IntakeJob) -> IntakeResult | None:
    """Return the stored result for the job's repeated Idempotency-Key, or None for a new key.

    Raises Conflict when the key was used before with a different body. The body is the same
    otherwise, so the result's `account_id` is the job's.
    """
    api_key_id, key, request_hash = job.data.api_key_id, job.idempotency_key, job.request_hash
    record = session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
        )
    ).one_or_none()
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise Conflict(
            "Idempotency-Key was already used with a different request body; "
            "use a new key for a new request",
            code="idempotency_conflict",
        )
    return IntakeResult(**record.response, account_id=job.data.account_id, replayed=True)


def intake_batch(
    session: Session, tenant: TenantSnapshot, jobs: Sequence[IntakeJob]
) -> list[IntakeResult | HubError]:
    """Run POST requests for jobs of one tenant in the caller's transaction, in order.

    A repeated Idempotency-Key gets its stored result. Every other job is submitted, and the
    requests are written together. While intake is `degraded` (the pipeline is behind), a job
    gets a token instead of the id, and `GET tokens/{token}` gives the id. A job that fails
    validation gets its error and writes nothing, and the others go on. A database error
    propagates: the transaction is lost for every job of the batch.
    """
    outcomes: list[IntakeResult | PreparedRequest | HubError] = []
    prepared: list[PreparedRequest] = []
    for job in jobs:
        try:
            stored = _stored_result(session, job)
            if stored is not None:
                outcomes.append(stored)
                continue
            item = prepare_request(session, job.ctx, tenant, job.data)
        except HubError as exc:
            outcomes.append(exc)
            continue
        prepared.append(item)
        outcomes.append(item)

    if prepared:
        link_duplicates(
            session, tenant, [item.row for item in prepared], [p.point for p in prepared]
        )
        store_requests(session, tenant.id, prepared)
    results: list[IntakeResult | HubError] = []
    for job, outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, PreparedRequest):
            outcome = _accepted(session, tenant, job, outcome)
        results.append(outcome)
    return results


def _stored_result(session: Session, job: IntakeJob) -> IntakeResult | None:
    if job.idempotency_key is None:
        return None
    if job.data.api_key_id is None or job.request_hash is None:
        raise InvalidInput("Idempotency-Key needs an api_key", code="invalid")
    return find_idempotent_result(session, job)


def _log_submitted(row: dict) -> None:
    log.info(
        "request_submitted",
        request_id=row["id"],
        service_code=row["service_code"],
        duplicate_of=row.get("duplicate_of"),
    )


def _accepted(
    session: Session, tenant: TenantSnapshot, job: IntakeJob, prepared: PreparedRequest
) -> IntakeResult:
    """Return the result of a written request, after adding its token and idempotency record."""
    request_id = prepared.row["id"]
    _log_submitted(prepared.row)
    token = None
    if job.degraded:
        token = new_token()
        session.add(RequestToken(token=token, tenant_id=tenant.id, request_id=request_id))
    notice = service_notice(
        tenant, prepared.row["expected_at"], job.language, token=token is not None
    )
    result = IntakeResult(
        service_request_id=request_id,
        token=token,
        service_notice=notice,
        account_id=job.data.account_id,
    )
    if job.idempotency_key is not None:
        session.add(
            IdempotencyRecord(
                tenant_id=tenant.id,
                api_key_id=job.data.api_key_id,
                key=job.idempotency_key,
                request_hash=job.request_hash,
                request_id=request_id,
                token=token,
                # account_id is left out because it is personal data and a replay carries it.
                response={
                    "service_request_id": result.service_request_id,
                    "token": result.token,
                    "service_notice": result.service_notice,
                },
            )
        )
    return result


def resolve_token(session: Session, ctx: TenantContext, token: str) -> RequestToken:
    row = session.get(RequestToken, token) if can_match_text(token) else None
    if row is None or row.tenant_id != ctx.tenant_id:
        raise NotFound("token not found", code="not_found")
    return row


def get_request(
    session: Session, ctx: TenantContext, request_id: str, *, public: bool = False
) -> ServiceRequest:
    """Return the tenant's request; another tenant's id is NotFound like an unknown one.

    With `public`, only the columns the public Open311 view shows are loaded.
    """
    if not can_match_text(request_id):
        raise request_not_found(request_id)
    options = [queries.PUBLIC_ONLY] if public else []
    request = session.get(ServiceRequest, request_id, options=options)
    if request is None or request.tenant_id != ctx.tenant_id:
        raise request_not_found(request_id)
    return request


def request_not_found(request_id: str) -> NotFound:
    # An id from a URL may be free text, or contain control characters that XML 1.0 cannot
    # carry, so only a plain one is repeated.
    shown_id = f" {request_id}" if PLAIN_CODE.fullmatch(request_id) else ""
    return NotFound(f"service request{shown_id} not found", code="not_found")


# How far the time an agency gives for an update may be off this server's clock: ahead of it,
# or before the request's requested_datetime.
MAX_CLOCK_SKEW_MINUTES = 5
MAX_CLOCK_SKEW = timedelta(minutes=MAX_CLOCK_SKEW_MINUTES)
MAX_UPDATE_ID_CHARS = 120


def request_agencies(session: Session, request: ServiceRequest) -> set[str]:
    """Return the codes of the agencies a request is routed to: its `agency_code` and the
    destination of each of its deliveries."""
    destinations = set(
        session.scalars(select(Delivery.destination).where(Delivery.request_id == request.id))
    )
    if request.agency_code:
        destinations.add(request.agency_code)
    return destinations


def _routed_request(
    session: Session, ctx: TenantContext, request_id: str, agencies: frozenset[str] | None
) -> ServiceRequest:
    """Return the tenant's request, which must be routed to one of `agencies` unless that is
    None. A request of another agency is NotFound like an unknown one, so an agency key
    learns nothing about other agencies' requests."""
    request = get_request(session, ctx, request_id)
    if agencies is not None and not agencies & request_agencies(session, request):
        log.info(
            "status_update_other_agency",
            tenant_id=ctx.tenant_id,
            request_id=request_id,
            actor=ctx.actor,
        )
        raise request_not_found(request_id)
    return request


def _latest_update_at(session: Session, request_id: str) -> datetime | None:
    """Return the time of the request's latest status update (`UPDATE_CHANNELS`), in UTC, or
    None before the first one.

    The events that the hub writes itself (intake's `submitted`, routing's `acknowledged` when
    an agency's webhook takes the request, SLA escalations, transfers) are dated by the hub's
    clock. An agency's update dated a little earlier by its own clock must still set the status,
    so only updates decide whether an update arrived out of order.
    """
    latest = session.scalar(
        select(func.max(StatusEvent.at)).where(
            StatusEvent.request_id == request_id, StatusEvent.channel.in_(UPDATE_CHANNELS)
        )
    )
    return as_utc(latest) if latest is not None else None


def _status_at(session: Session, request_id: str, when: datetime) -> str:
    """Return the request's status at `when`, as its history records it."""
    status = session.scalar(
        select(StatusEvent.status)
        .where(StatusEvent.request_id == request_id, StatusEvent.at <= when)
        .order_by(StatusEvent.at.desc(), StatusEvent.id.desc())
        .limit(1)
    )
    return status or "submitted"


def _check_transition(previous: str, status: str, *, when: datetime | None = None) -> None:
    """Raise Conflict when TRANSITIONS allows no change from `previous` to `status`.

    `when` is the time of an update dated before the request's latest update, whose
    `previous` status is the one the history records at that time.
    """
    allowed = TRANSITIONS[previous]
    if status in allowed:
        return
    choices = [state for state in STATES if state in allowed]
    allowed_text = ", ".join(choices[:-1]) + f" or {choices[-1]}"
    at_time = f" at {isoformat(when)}" if when is not None else ""
    raise Conflict(
        f"cannot change status from {previous} to {status}{at_time}; a request that is "
        f"{previous} can change only to {allowed_text}",
        code="invalid_transition",
    )


def _check_next_update(session: Session, request_id: str, when: datetime, status: str) -> None:
    """Raise Conflict when the update after `when` could not follow an update to `status`.

    A late update goes into the history between two updates, so the history would show a
    change that `TRANSITIONS` forbids, such as closed then on_hold.
    """
    following = session.execute(
        select(StatusEvent.status, StatusEvent.at)
        .where(
            StatusEvent.request_id == request_id,
            StatusEvent.channel.in_(UPDATE_CHANNELS),
            StatusEvent.at > when,
        )
        .order_by(StatusEvent.at, StatusEvent.id)
        .limit(1)
    ).first()
    if following is None or following.status in TRANSITIONS[status]:
        return
    raise Conflict(
        f"cannot add status {status} at {isoformat(when)} before the update to "
        f"{following.status} at {isoformat(as_utc(following.at))}, because a request that is "
        f"{status} cannot change to {following.status}; send the update with its real time "
        "or leave it out",
        code="invalid_transition",
    )


def update_outcome(session: Session, ctx: TenantContext, event: StatusEvent) -> tuple[str, bool]:
    """Return the current status of the event's request and whether a later update supersedes
    the event, so that the event is in the history but did not set the current status."""
    request = get_request(session, ctx, event.request_id)
    return request.status, _before_latest(as_utc(event.at), _latest_update_at(session, request.id))


def _before_latest(when: datetime, latest: datetime | None) -> bool:
    """Return whether an update at `when` is dated before the latest update, at `latest`.

    Open311 clients send whole seconds, so an update in the second of the latest one counts
    as later: an agency that closes a request in the second it was put in progress closes it.
    """
    return latest is not None and when < latest.replace(microsecond=0)


def check_update_fields(
    status: str | None, resolution: str | None, note: str | None, *, note_field: str = "note"
) -> None:
    """Raise every problem of a status update's status, resolution and note together.

    A `status` of None means that the caller rejected the status, so the resolution is checked
    only against `RESOLUTIONS`. `note_field` names the note in messages as the caller's
    interface calls it.
    """
    errors = ErrorCollector()
    if status is not None and status not in STATES:
        errors.add(InvalidInput(f"status must be one of {', '.join(STATES)}", field="status"))
    if status == "closed" and resolution is None:
        errors.add(
            InvalidInput(
                f"closing needs a resolution: one of {', '.join(RESOLUTIONS)}",
                field="resolution",
            )
        )
    elif resolution is not None and status in STATES and status != "closed":
        errors.add(InvalidInput("resolution applies only to status closed", field="resolution"))
    elif resolution is not None and resolution not in RESOLUTIONS:
        errors.add(
            InvalidInput(
                f"resolution is invalid; use one of {', '.join(RESOLUTIONS)}", field="resolution"
            )
        )
    errors.check(check_text, note_field, note, max_chars=MAX_DESCRIPTION_CHARS)
    errors.raise_any()


def post_status_update(
    session: Session,
    ctx: TenantContext,
    request_id: str,
    status: str,
    *,
    note: str | None = None,
    update_id: str | None = None,
    resolution: str | None = None,
    channel: str = "agency",
    at: datetime | None = None,
    agencies: frozenset[str] | None = None,
) -> tuple[StatusEvent, bool]:
    """Record one status change and return the event and whether it was new.

    An `update_id` seen before returns the earlier event and changes nothing, so an agency may
    resend an update safely. An update dated before the request's latest update goes into the
    history at its time and leaves the current status as the latest update set it. The hub's
    own events do not count as updates here (`_latest_update_at`). `channel` is one of
    `UPDATE_CHANNELS`. With
    `agencies` (an agency key's), only requests routed to one of them can be updated.
    """
    if update_id is not None:
        check_text("update_id", update_id, max_chars=MAX_UPDATE_ID_CHARS)
        earlier = session.scalars(
            select(StatusEvent).where(StatusEvent.update_id == update_id)
        ).one_or_none()
        if earlier is not None:
            if earlier.request_id != request_id:
                # The update_id is unique in the tenant, so it cannot name a second request.
                # The error names no request, because the earlier one may be another agency's.
                raise Conflict(
                    f"update_id {update_id!r} was already used for another service request; "
                    "send a new update_id",
                    code="update_id_in_use",
                    field="update_id",
                )
            if agencies is not None:
                _routed_request(session, ctx, earlier.request_id, agencies)
            if (earlier.status, earlier.resolution) != (status, resolution):
                # A resend carries the same change. A different one under a used update_id
                # would be lost if the response reported it as a repeat.
                raise Conflict(
                    f"update_id {update_id!r} was already used for status "
                    f"{earlier.status}; send a new update_id for another change",
                    code="update_id_in_use",
                    field="update_id",
                )
            STATUS_UPDATES.labels(tenant=ctx.tenant_id, outcome="duplicate").inc()
            return earlier, False

    check_update_fields(status, resolution, note)
    if channel not in UPDATE_CHANNELS:
        raise ValueError(f"status updates come through {UPDATE_CHANNELS}, not {channel!r}")

    request = _routed_request(session, ctx, request_id, agencies)
    # Two updates of one request at once must see each other: the second waits here until the
    # first commits, then reads its status and time (PostgreSQL; SQLite serializes writers).
    session.refresh(request, with_for_update=True)
    when = as_utc(at) if at else utcnow()
    if at is not None and when < as_utc(request.requested_at) - MAX_CLOCK_SKEW:
        raise InvalidInput(
            f"updated_datetime {isoformat(when)} is more than {MAX_CLOCK_SKEW_MINUTES} "
            f"minutes before the request's requested_datetime "
            f"{isoformat(request.requested_at)}; send the time the update was made",
            field="updated_datetime",
        )
    latest = _latest_update_at(session, request.id)
    superseded = _before_latest(when, latest)
    if not superseded and latest is not None and when < latest:
        # Dated in the latest update's second: record it at that update's time, so that the
        # history lists it after that update, as it arrived. Reads show whole seconds.
        when = latest
    if superseded:
        _check_transition(_status_at(session, request.id, when), status, when=when)
        _check_next_update(session, request.id, when, status)
    else:
        _check_transition(request.status, status)

    event = StatusEvent(
        tenant_id=ctx.tenant_id,
        request_id=request.id,
        at=when,
        status=status,
        resolution=resolution,
        actor=ctx.actor,
        channel=channel,
        update_id=update_id,
    )
    session.add(event)
    if note is not None:
        # The ciphertext is bound to the event's id, which exists only after the insert.
        session.flush()
        cipher = FieldCipher.for_tenant(session, ctx.tenant_id)
        event.note_enc = seal_event_note(cipher, event.id, note)
        event.dek_version = cipher.dek_version

    if superseded:
        STATUS_UPDATES.labels(tenant=ctx.tenant_id, outcome="superseded").inc()
        log.info(
            "request_status_update_superseded",
            request_id=request.id,
            status=status,
            current_status=request.status,
        )
        return event, True
    request.status = status
    request.resolution = resolution
    request.updated_at = when
    request.closed_at = when if status == "closed" else None
    STATUS_UPDATES.labels(tenant=ctx.tenant_id, outcome="applied").inc()
    log.info("request_status_changed", request_id=request.id, status=status)
    return event, True


# Audit action of a search for a person's requests by e-mail or phone.
ACTION_CONTACT_SEARCH = "pii.search"


def search_by_contact(
    session: Session,
    ctx: TenantContext,
    *,
    email: str | None = None,
    phone: str | None = None,
    limit: int = 100,
    purpose: str | None = None,
) -> list[ServiceRequest]:
    """Find the tenant's requests filed with this e-mail or phone, newest first, and audit
    the search, which uses personal data although it decrypts nothing.

    The entry records the fields searched by, the purpose when one is given (checked like a
    decryption's), the number of requests found, and the caller. Its subject is the blind
    index of the e-mail, else of the phone, so searches for one person can be matched up
    without the entry containing the value.
    """
    if purpose is not None:
        check_caller(session, ctx, REQUESTS_TABLE, "search", purpose=purpose)
    rows = queries.find_by_contact(session, ctx, email=email, phone=phone, limit=limit)
    searched = {name: value for name, value in (("email", email), ("phone", phone)) if value}
    field = next(iter(searched))
    index, _ = blind_index(session, ctx.tenant_id, field, searched[field])
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action=ACTION_CONTACT_SEARCH,
        subject=f"blind_index:{field}:{index}",
        details={
            "by": sorted(searched),
            "purpose": purpose,
            "results": len(rows),
            "roles": sorted(ctx.roles),
            "request_id": ctx.request_id,
        },
    )
    return rows
