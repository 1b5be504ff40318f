"""Transfer of a request filed with the wrong jurisdiction to the right one.

The request keeps its tracking id and history. Its personal fields and event notes are
decrypted under the sending tenant's keys (one audited decryption per row) and encrypted again
under the receiving tenant's, because every ciphertext is bound to its tenant. Blind indexes
are recomputed under the receiving tenant's index key, and routing starts over there.
"""

from __future__ import annotations

import json
import secrets

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from hub.core.clock import utcnow
from hub.core.errors import Forbidden, InvalidInput, NotFound
from hub.core.outbox import enqueue
from hub.core.tasks import QUEUE_INTAKE
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import catalog
from hub.requests.catalog import TenantSnapshot
from hub.requests.metrics import TRANSFERS
from hub.requests.models import (
    REQUEST_ENCRYPTED_COLUMNS,
    TRANSFER_CHANNEL,
    Delivery,
    IdempotencyRecord,
    ServiceRequest,
    StatusEvent,
)
from hub.requests.records import EVENTS_TABLE, REQUESTS_TABLE, public_location, stored_cell
from hub.requests.routing import ROUTE_TASK
from hub.requests.service import active_service
from privacy.access import decrypt_fields, decrypt_rows
from privacy.audit import audit, lock_chains
from privacy.blind_index import blind_index
from privacy.fields import FieldCipher
from privacy.purposes import declare_purpose

log = structlog.get_logger(__name__)

# Audit actions of the two sides of a transfer, one in each tenant's chain.
ACTION_TRANSFER_OUT = "request.transfer_out"
ACTION_TRANSFER_IN = "request.transfer_in"

PURPOSE = declare_purpose(
    "request.transfer",
    "Re-encrypt a service request under the keys of the jurisdiction it is transferred to.",
)


def transfer_request(
    session: Session,
    source: TenantContext,
    target: TenantSnapshot,
    request_id: str,
    *,
    service_code: str | None = None,
) -> ServiceRequest:
    """Move a request from `source`'s tenant to `target`, keeping its id and history.

    `session` must be system-scoped, because the rows change tenant. `service_code` names the
    service in the receiving catalog when its code differs. The moved status events keep
    their times, statuses and notes but not their `update_id`.
    """
    if not isinstance(session.info.get("scope"), SystemContext):
        raise Forbidden("a transfer needs a system-scoped session", code="transfer_scope")
    if target.id == source.tenant_id:
        raise InvalidInput("the request already belongs to that jurisdiction", field="tenant")
    request = session.get(ServiceRequest, request_id)
    if request is None or request.tenant_id != source.tenant_id:
        raise NotFound(f"service request {request_id} not found", code="not_found")
    service = active_service(target, service_code or request.service_code)
    service_code_before = request.service_code
    # Both chains get entries: lock them now, in a fixed order, before the first one is written.
    lock_chains(session, source.tenant_id, target.id)

    plain = decrypt_fields(
        session,
        source,
        REQUESTS_TABLE,
        request.id,
        {column: getattr(request, column) for column in REQUEST_ENCRYPTED_COLUMNS},
        purpose=PURPOSE,
    )
    events = session.scalars(
        select(StatusEvent).where(StatusEvent.request_id == request.id).order_by(StatusEvent.id)
    ).all()
    with_notes = [event for event in events if event.note_enc is not None]
    notes: dict[int, str | None] = {}
    if with_notes:
        plain_notes = decrypt_rows(
            session,
            source,
            EVENTS_TABLE,
            [(str(event.id), {"note_enc": event.note_enc}) for event in with_notes],
            purpose=PURPOSE,
        )
        for event, note in zip(with_notes, plain_notes, strict=True):
            notes[event.id] = note["note_enc"]

    cipher = FieldCipher.for_tenant(session, target.id)
    for column in REQUEST_ENCRYPTED_COLUMNS:
        setattr(request, column, cipher.encrypt(REQUESTS_TABLE, column, request.id, plain[column]))
    request.dek_version = cipher.dek_version
    request.email_bidx, request.bidx_version = blind_index(
        session, target.id, "email", plain["email_enc"]
    )
    request.phone_bidx, _ = blind_index(session, target.id, "phone", plain["phone_enc"])
    # The device id is not stored, so it cannot be indexed under the receiving tenant's key,
    # and the sending tenant's index would link the request to that tenant's rows.
    request.device_id_bidx = None

    # Public coordinates and the district follow the receiving tenant and service.
    if plain["location_enc"] is not None:
        exact_lat, exact_lon = json.loads(plain["location_enc"])
    else:
        exact_lat, exact_lon = request.lat, request.lon
    request.district = None
    request.h3_cell = stored_cell(service, exact_lat, exact_lon)
    if exact_lat is not None and exact_lon is not None:
        if service.location_sensitive and plain["location_enc"] is None:
            request.location_enc = cipher.encrypt(
                REQUESTS_TABLE, "location_enc", request.id, json.dumps([exact_lat, exact_lon])
            )
        if not service.location_sensitive:
            request.location_enc = None
        request.lat, request.lon, request.district = public_location(
            target, service, exact_lat, exact_lon
        )

    for event in events:
        event.tenant_id = target.id
        # An update_id is unique per tenant and names an update of the sending tenant's
        # agencies. Kept, it could equal one that the receiving tenant's agencies used
        # already, which the unique constraint rejects, or will use for this request, which
        # would then be taken for a resend and dropped.
        event.update_id = None
        if event.id in notes:
            note = notes[event.id]
            event.note_enc = cipher.encrypt(EVENTS_TABLE, "note_enc", str(event.id), note)
            event.dek_version = cipher.dek_version

    session.execute(delete(Delivery).where(Delivery.request_id == request.id))
    session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.request_id == request.id)
        .values(request_id=None)
    )
    now = utcnow()
    agencies = catalog.destinations(target, service)
    request.tenant_id = target.id
    request.transferred_from = source.tenant_id
    request.service_code = service.code
    request.agency_code = agencies[0] if agencies else None
    request.expected_at = catalog.expected_at(target, service, now)
    request.duplicate_of = None
    request.sla_breached_at = None
    request.updated_at = now
    session.add(
        StatusEvent(
            tenant_id=target.id,
            request_id=request.id,
            at=now,
            status=request.status,
            resolution=request.resolution,
            actor=source.actor,
            channel=TRANSFER_CHANNEL,
        )
    )
    for agency in agencies:
        session.add(Delivery(tenant_id=target.id, request_id=request.id, destination=agency))
    enqueue(session, ROUTE_TASK, queue=QUEUE_INTAKE, tenant_id=target.id, request_id=request.id)
    _audit_handover(session, source, target, request, from_service=service_code_before)
    TRANSFERS.labels(tenant=target.id).inc()
    log.info(
        "request_transferred",
        request_id=request.id,
        from_tenant=source.tenant_id,
        to_tenant=target.id,
    )
    return request


def _audit_handover(
    session: Session,
    source: TenantContext,
    target: TenantSnapshot,
    request: ServiceRequest,
    *,
    from_service: str,
) -> None:
    """Record the hand-over of a request's personal data in both tenants' audit chains.

    Each chain stores the request id only as an HMAC under its own tenant's key, so the two
    entries share a random `transfer_id` that ties them together.
    """
    details = {
        "transfer_id": secrets.token_hex(8),
        "from_tenant": source.tenant_id,
        "to_tenant": target.id,
        "from_service_code": from_service,
        "to_service_code": request.service_code,
        "roles": sorted(source.roles),
        "request_id": source.request_id,
    }
    subject = f"{REQUESTS_TABLE}:{request.id}"
    for tenant_id, action in (
        (source.tenant_id, ACTION_TRANSFER_OUT),
        (target.id, ACTION_TRANSFER_IN),
    ):
        audit(
            session,
            tenant_id=tenant_id,
            actor=source.actor,
            action=action,
            subject=subject,
            details=details,
        )
