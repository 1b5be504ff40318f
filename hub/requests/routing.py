"""Routing of service requests to agency back offices, one delivery row per destination.

A delivery moves through `pending` -> `sent`, or `failed` (waiting for a retry) -> `sent`, or to
`dead` after a permanent error or a transient one once `RETRY_WINDOW_SECONDS` have passed since
its first attempt. Each destination has its own row, so a failing agency never holds back or
marks the others. `hub.requests.redelivery.redeliver` moves dead deliveries back to `pending`
with a new retry window.

Sending happens outside any database transaction, in three steps run by the task:

1. `claim_deliveries` (one transaction) takes the due rows of the request, counts the attempt
   and sets `next_attempt_at` to a lease, so a second worker with the same message skips them.
   It builds the payload by decrypting through `privacy.access.decrypt_fields`. A delivery to
   an agency with `max_deliveries_per_minute` first reserves a send slot
   (`hub.requests.send_slots`), and one whose slot is later waits for it without an attempt.
2. `webhook.post` for each claim, with no transaction open.
3. `record_outcome` (one transaction per claim): mark the row sent, or schedule the retry through
   the outbox, guarded by the attempt number so a late writer cannot overwrite a newer attempt.

A worker that dies between steps 1 and 3 leaves a lease that expires, and the periodic
`hub.requests.sweep_deliveries` task re-enqueues such rows. Payloads are built per attempt and
never written to the database, so nothing decrypted is stored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, isoformat, utcnow
from hub.core.errors import HubError
from hub.core.outbox import enqueue, mergeable
from hub.core.tasks import QUEUE_INTAKE
from hub.core.tenancy import TenantContext
from hub.requests import send_slots
from hub.requests.metrics import DELIVERIES_DEFERRED, DELIVERY_ATTEMPTS
from hub.requests.models import REQUEST_ENCRYPTED_COLUMNS, Delivery, ServiceRequest, StatusEvent
from hub.requests.webhook import SendResult
from privacy.access import decrypt_fields
from privacy.purposes import declare_purpose
from tenants.agencies import WebhookSecrets, webhook_secrets
from tenants.languages import text_for
from tenants.models import Agency, Service, Tenant

log = structlog.get_logger(__name__)

ROUTE_TASK = "hub.requests.route"
# One message for the requests that intake stored together. The worker queues ROUTE_TASK for
# each of them.
ROUTE_BATCH_TASK = "hub.requests.route_batch"
# A relay round that finds several batches publishes them as one message.
mergeable(ROUTE_BATCH_TASK, "request_ids")
DECRYPT_PURPOSE = declare_purpose(
    "agency_delivery",
    "Send a service request's personal fields to the agency webhook that handles the request.",
)
# Seconds a claimed delivery stays reserved for the worker sending it. Well above the webhook's
# connect plus read timeout, so a slow but live POST is never sent twice by a second worker.
LEASE_SECONDS = 60
# Seconds after a delivery's first attempt during which transient failures are retried. A
# transient failure after that marks it dead. 24 hours covers an agency back office that goes
# down after hours and is fixed the next working day. The `HubAgencyWebhookFailing` alert fires
# after 15 minutes of failures, long before anything goes dead, and `hub requests redeliver`
# resends dead deliveries.
RETRY_WINDOW_SECONDS = 24 * 3600
# Backoff before retry n (1-based) is drawn from [b/2, b] with b = BASE * 2**(n-1), capped.
# The cap reaches 1 h from retry 11 on (after at most 1.4 h), so a full window makes about 34 to
# 58 attempts and an agency that comes back gets its requests within the hour.
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 3600.0
# A due delivery not picked up this long after its time is re-enqueued by the sweep.
SWEEP_GRACE_SECONDS = 300

# Encrypted columns of a request and the payload field each one fills. account_id names the
# resident's account in the city's app: agencies do not need it, so it is neither decrypted
# nor sent.
_ENCRYPTED_FIELDS = {
    column: column.removesuffix("_enc")
    for column in REQUEST_ENCRYPTED_COLUMNS
    if column != "account_id_enc"
}
_RETRYABLE_STATES = ("pending", "failed")


@dataclass(frozen=True)
class Claim:
    """One delivery reserved for one POST attempt."""

    delivery_id: int
    # `Delivery.public_id`, sent as `X-Hub-Delivery-Id` and in the body's `delivery_id`.
    public_id: str
    request_id: str
    destination: str
    attempt: int
    url: str
    secret: str
    # The secret that a rotation replaced, while its overlap lasts: the POST carries a second
    # signature made with it.
    previous_secret: str | None
    body: bytes
    # Start of the retry window the attempt belongs to. `redeliver` starts a new window and
    # counts attempts from 0 again, so the attempt number alone could match a claim made
    # before the redelivery.
    window_start: datetime


def backoff_seconds(attempt: int, rng: random.Random | None = None) -> float:
    """Return the wait before retrying after failed attempt number `attempt` (1-based)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def retry_window_over(row: Delivery, now: datetime) -> bool:
    """Return whether `RETRY_WINDOW_SECONDS` have passed since the row's first attempt.

    A row without `first_attempt_at` (claimed before the column existed) counts from its
    creation.
    """
    started = as_utc(row.first_attempt_at or row.created_at)
    return now - started >= timedelta(seconds=RETRY_WINDOW_SECONDS)


def _is_due(now: datetime) -> Any:
    return or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)


def claim_deliveries(
    session: Session, ctx: TenantContext, request_id: str, *, now: datetime | None = None
) -> list[Claim]:
    """Reserve the request's due deliveries and build their signed bodies.

    Destinations without a webhook URL or secret, or no longer in the catalog, are marked dead
    here with the reason, because retrying cannot fix them. Deliveries over their agency's
    `max_deliveries_per_minute` are left out and scheduled for their send slot.
    """
    now = now or utcnow()
    rows = session.scalars(
        select(Delivery)
        .where(
            Delivery.request_id == request_id,
            Delivery.state.in_(_RETRYABLE_STATES),
            _is_due(now),
        )
        .order_by(Delivery.id)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []

    request = session.get(ServiceRequest, request_id)
    if request is None:
        return []
    agencies = {
        agency.code: agency
        for agency in session.scalars(
            select(Agency).where(Agency.code.in_([row.destination for row in rows]))
        )
    }
    # Before the payload: a request whose deliveries all wait decrypts nothing.
    rows = _hold_for_send_slots(session, ctx, rows, agencies, now)
    if not rows:
        session.flush()
        return []
    tenant = session.get(Tenant, ctx.tenant_id)
    try:
        payload = _payload(session, ctx, request, tenant)
    except HubError as exc:
        # A ciphertext that fails to decrypt (altered, or its keys shredded at offboarding)
        # fails the same way on every retry, so the deliveries end here with the error code.
        for row in rows:
            _mark_dead(row, f"payload not built: {exc.code}", ctx, now)
        session.flush()
        return []

    claims: list[Claim] = []
    for row in rows:
        agency = agencies.get(row.destination)
        try:
            agency_secrets = _agency_secrets(session, agency, now)
        except HubError as exc:
            # A secret that fails to decrypt (altered, moved from another agency, or its keys
            # shredded) fails the same way on every retry.
            _mark_dead(row, f"webhook secret not decrypted: {exc.code}", ctx, now)
            continue
        if agency is None or not agency.webhook_url or not agency_secrets.current:
            _mark_dead(row, _unroutable_reason(agency), ctx, now)
            continue
        row.attempts += 1
        if row.first_attempt_at is None:
            row.first_attempt_at = now
        row.next_attempt_at = now + timedelta(seconds=LEASE_SECONDS)
        body = json.dumps(
            {**payload, "delivery_id": row.public_id, "agency_code": row.destination},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        claims.append(
            Claim(
                delivery_id=row.id,
                public_id=row.public_id,
                request_id=request_id,
                destination=row.destination,
                attempt=row.attempts,
                url=agency.webhook_url,
                secret=agency_secrets.current,
                previous_secret=agency_secrets.previous,
                body=body,
                window_start=as_utc(row.first_attempt_at),
            )
        )
    session.flush()
    return claims


def _hold_for_send_slots(
    session: Session,
    ctx: TenantContext,
    rows: Sequence[Delivery],
    agencies: dict[str, Agency],
    now: datetime,
) -> list[Delivery]:
    """Reserve a send slot for each row whose agency has a `max_deliveries_per_minute`, and
    return the rows that may be sent now.

    A row whose slot is later keeps its state and attempt count, waits with `next_attempt_at`
    at the slot, and gets a routing task queued for that time.
    """
    send_slots.lock_capped_agencies(session, agencies.values())
    ready: list[Delivery] = []
    for row in rows:
        agency = agencies.get(row.destination)
        slot = now if agency is None else send_slots.reserve_send_slot(agency, row, now)
        if slot <= now:
            ready.append(row)
            continue
        row.next_attempt_at = slot
        delay = (slot - now).total_seconds()
        queue_route(session, ctx.tenant_id, row.request_id, delay_seconds=delay)
        DELIVERIES_DEFERRED.labels(tenant=ctx.tenant_id, agency=row.destination).inc()
        log.info(
            "delivery_deferred",
            **_log_fields(row),
            request_id=row.request_id,
            send_at=isoformat(slot),
            delay_seconds=round(delay, 1),
        )
    return ready


def _agency_secrets(session: Session, agency: Agency | None, now: datetime) -> WebhookSecrets:
    if agency is None or not agency.webhook_url:
        return WebhookSecrets(None, None)
    return webhook_secrets(session, agency, now=now)


def _unroutable_reason(agency: Agency | None) -> str:
    if agency is None:
        return "agency not in the tenant's catalog"
    if not agency.webhook_url:
        return "agency has no webhook URL"
    return "agency has no webhook secret"


def _mark_dead(row: Delivery, reason: str, ctx: TenantContext, now: datetime) -> None:
    row.state = "dead"
    row.last_error = reason
    row.next_attempt_at = None
    row.dead_at = now
    DELIVERY_ATTEMPTS.labels(tenant=ctx.tenant_id, outcome="dead").inc()
    log.warning("delivery_dead", **_log_fields(row), request_id=row.request_id, error=reason)


def _log_fields(row: Delivery) -> dict[str, Any]:
    """Return the fields that identify a delivery in the log, with its attempts so far."""
    return {
        "delivery_id": row.id,
        "public_id": row.public_id,
        "agency": row.destination,
        "attempts": row.attempts,
    }


def _payload(
    session: Session, ctx: TenantContext, request: ServiceRequest, tenant: Tenant | None
) -> dict[str, Any]:
    blobs = {column: getattr(request, column) for column in _ENCRYPTED_FIELDS}
    present = {column: blob for column, blob in blobs.items() if blob is not None}
    plain: dict[str, str | None] = {}
    if present:
        plain = decrypt_fields(
            session, ctx, "service_requests", request.id, present, purpose=DECRYPT_PURPOSE
        )
    fields = {name: plain.get(column) for column, name in _ENCRYPTED_FIELDS.items()}

    lat, lon = _exact_location(fields.pop("location"), request)
    return {
        "tenant_id": ctx.tenant_id,
        "jurisdiction_id": tenant.jurisdiction_id if tenant else None,
        "service_request_id": request.id,
        "service_code": request.service_code,
        "service_name": _service_name(session, ctx, request.service_code, tenant),
        "status": request.status,
        "requested_datetime": isoformat(request.requested_at),
        "expected_datetime": isoformat(request.expected_at),
        "lat": lat,
        "long": lon,
        "zipcode": request.zipcode,
        "duplicate_of": request.duplicate_of,
        "attributes": _json_or_text(fields.pop("attributes")),
        **fields,
    }


def _service_name(
    session: Session, ctx: TenantContext, code: str, tenant: Tenant | None
) -> str | None:
    """Return the service's name in the tenant's default language, or None when the catalog
    has no service `code`."""
    names = session.scalar(
        select(Service.names).where(Service.tenant_id == ctx.tenant_id, Service.code == code)
    )
    if names is None or tenant is None:
        return None
    return text_for(names, tenant.default_language)


def _exact_location(plain: str | None, request: ServiceRequest) -> tuple[Any, Any]:
    """Return the exact point: the encrypted one of a location-sensitive request when present
    (stored as `lat,long` or a JSON object), else the public coordinates."""
    if plain:
        try:
            value = json.loads(plain)
        except ValueError:
            value = plain
        if isinstance(value, dict):
            return value.get("lat"), value.get("long", value.get("lon"))
        if isinstance(value, list) and len(value) == 2:
            return value[0], value[1]
        if isinstance(value, str) and "," in value:
            lat, lon = value.split(",", 1)
            return float(lat), float(lon)
    return request.lat, request.lon


def _json_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def record_outcome(
    session: Session,
    ctx: TenantContext,
    claim: Claim,
    result: SendResult,
    *,
    now: datetime | None = None,
) -> str:
    """Store the outcome of one attempt; return `sent`, `retry`, `dead` or `stale`.

    `stale` means another worker has claimed the row since (this worker's lease ran out), or a
    redelivery started a new retry window, so this attempt's outcome is dropped rather than
    overwriting the newer one.
    """
    now = now or utcnow()
    row = session.scalars(
        select(Delivery).where(Delivery.id == claim.delivery_id).with_for_update()
    ).one_or_none()
    if (
        row is None
        or row.attempts != claim.attempt
        or row.first_attempt_at is None
        or as_utc(row.first_attempt_at) != claim.window_start
        or row.state not in _RETRYABLE_STATES
    ):
        log.info("delivery_outcome_stale", delivery_id=claim.delivery_id, attempt=claim.attempt)
        return "stale"

    if result.ok:
        row.state = "sent"
        row.sent_at = now
        row.next_attempt_at = None
        row.last_error = None
        _acknowledge(session, ctx, claim, now)
        DELIVERY_ATTEMPTS.labels(tenant=ctx.tenant_id, outcome="sent").inc()
        log.info("delivery_sent", **_log_fields(row))
        return "sent"

    if not result.transient or retry_window_over(row, now):
        _mark_dead(row, result.error or "failed", ctx, now)
        return "dead"

    delay = backoff_seconds(row.attempts)
    if result.retry_after is not None:
        delay = max(delay, result.retry_after)
    row.state = "failed"
    row.last_error = result.error
    row.next_attempt_at = now + timedelta(seconds=delay)
    queue_route(session, ctx.tenant_id, claim.request_id, delay_seconds=delay)
    DELIVERY_ATTEMPTS.labels(tenant=ctx.tenant_id, outcome="retry").inc()
    log.warning(
        "delivery_retry_scheduled",
        **_log_fields(row),
        error=result.error,
        delay_seconds=round(delay, 1),
    )
    return "retry"


def _acknowledge(session: Session, ctx: TenantContext, claim: Claim, now: datetime) -> None:
    """Move a submitted request to `acknowledged` once its first destination has it."""
    request = session.scalars(
        select(ServiceRequest).where(ServiceRequest.id == claim.request_id).with_for_update()
    ).one_or_none()
    if request is None or request.status != "submitted":
        return
    request.status = "acknowledged"
    request.updated_at = now
    session.add(
        StatusEvent(
            tenant_id=ctx.tenant_id,
            request_id=request.id,
            at=now,
            status="acknowledged",
            actor=f"agency:{claim.destination}",
            channel="webhook",
        )
    )


def overdue_requests(
    session: Session, *, now: datetime | None = None, limit: int = 500
) -> list[tuple[str, str]]:
    """Return (tenant_id, request_id) pairs with a due delivery that no worker has taken up for
    `SWEEP_GRACE_SECONDS`: a lease left by a dead worker, or a lost retry message."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=SWEEP_GRACE_SECONDS)
    rows = session.execute(
        select(Delivery.tenant_id, Delivery.request_id)
        .where(
            Delivery.state.in_(_RETRYABLE_STATES),
            or_(
                Delivery.next_attempt_at <= cutoff,
                Delivery.next_attempt_at.is_(None) & (Delivery.created_at <= cutoff),
            ),
        )
        .distinct()
        .limit(limit)
    ).all()
    return [(tenant_id, request_id) for tenant_id, request_id in rows]


def requeue(session: Session, pairs: list[tuple[str, str]]) -> None:
    for tenant_id, request_id in pairs:
        queue_route(session, tenant_id, request_id)


def queue_route(
    session: Session, tenant_id: str, request_id: str, *, delay_seconds: float = 0
) -> None:
    """Queue the routing task of one request through the outbox. The relay publishes it once
    the caller's transaction has committed and `delay_seconds` have passed.

    The task sends only the deliveries whose `next_attempt_at` has come, so a caller that
    schedules a delivery for later queues the task with the same delay.
    """
    enqueue(
        session,
        ROUTE_TASK,
        queue=QUEUE_INTAKE,
        tenant_id=tenant_id,
        delay_seconds=delay_seconds,
        request_id=request_id,
    )
