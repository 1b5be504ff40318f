"""Staff JSON API over requests: decrypted views for a purpose, caller lookup, transfers.

Callers authenticate with `Authorization: Bearer KEY` or `X-Api-Key: KEY`. Reading personal
data needs the staff or agent role and goes through `privacy.access`, which audits each
decryption with its purpose. Another tenant's request, or a tenant path the key does not
belong to, returns 404.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field

from hub.core.clock import isoformat
from hub.core.db import unit_of_work
from hub.core.errors import NotFound
from hub.core.tenancy import (
    ROLE_ADMIN,
    ROLE_AGENT,
    ROLE_AUDITOR,
    ROLE_STAFF,
    SystemContext,
    TenantContext,
)
from hub.requests import queries, service
from hub.requests.models import REQUEST_ENCRYPTED_COLUMNS, ServiceRequest
from hub.requests.records import EVENTS_TABLE, REQUESTS_TABLE
from hub.requests.transfer import transfer_request
from privacy.access import check_caller, decrypt_fields, decrypt_rows
from privacy.purposes import STAFF_REQUEST_VIEW
from tenants.auth import authenticate, key_from_headers, request_id_of
from tenants.registry import get_tenant

router = APIRouter(prefix="/api/v1", tags=["requests"])

READ_ROLES = frozenset({ROLE_STAFF, ROLE_AGENT})
# An auditor's key passes authentication on the decrypting view only so that its attempt is
# rejected by `privacy.access`, which audits it as `pii.decrypt_rejected`.
VIEW_ROLES = READ_ROLES | {ROLE_AUDITOR}
TRANSFER_ROLES = frozenset({ROLE_STAFF, ROLE_ADMIN})
VIEW_PURPOSE = STAFF_REQUEST_VIEW


def _context(
    request: Request,
    authorization: str | None,
    x_api_key: str | None,
    roles: frozenset[str],
) -> TenantContext:
    ctx = authenticate(
        key_from_headers(authorization, x_api_key),
        any_of=roles,
        request_id=request_id_of(request),
    )
    request.state.tenant_id = ctx.tenant_id
    return ctx


def _own_tenant(ctx: TenantContext, tenant_id: str) -> None:
    if tenant_id != ctx.tenant_id:
        raise NotFound(f"tenant {tenant_id} not found", code="not_found")


def _summary(row: ServiceRequest) -> dict[str, Any]:
    return {
        "service_request_id": row.id,
        "tenant_id": row.tenant_id,
        "service_code": row.service_code,
        "status": row.status,
        "resolution": row.resolution,
        "agency_code": row.agency_code,
        "requested_datetime": isoformat(row.requested_at),
        "updated_datetime": isoformat(row.updated_at),
        "expected_datetime": isoformat(row.expected_at),
        "duplicate_of": row.duplicate_of,
        "transferred_from": row.transferred_from,
    }


@router.get("/tenants/{tenant_id}/requests/{request_id}")
def staff_request(
    tenant_id: str,
    request_id: str,
    request: Request,
    purpose: str = VIEW_PURPOSE,
    authorization: str | None = Header(default=None),
    x_api_key: str | None = Header(default=None),
) -> dict[str, Any]:
    """Return one request with its personal fields and note history decrypted for `purpose`."""
    ctx = _context(request, authorization, x_api_key, VIEW_ROLES)
    _own_tenant(ctx, tenant_id)
    with unit_of_work(ctx) as session:
        # Before the row is read, so an auditor learns nothing about which ids exist.
        check_caller(session, ctx, REQUESTS_TABLE, request_id, purpose=purpose)
        row = service.get_request(session, ctx, request_id)
        plain = decrypt_fields(
            session,
            ctx,
            REQUESTS_TABLE,
            row.id,
            {column: getattr(row, column) for column in REQUEST_ENCRYPTED_COLUMNS},
            purpose=purpose,
        )
        events = queries.events_by_request(session, ctx, [row.id]).get(row.id, [])
        with_notes = [event for event in events if event.note_enc is not None]
        notes = (
            decrypt_rows(
                session,
                ctx,
                EVENTS_TABLE,
                [(str(event.id), {"note_enc": event.note_enc}) for event in with_notes],
                purpose=purpose,
            )
            if with_notes
            else []
        )
        note_by_event = {
            event.id: note["note_enc"] for event, note in zip(with_notes, notes, strict=True)
        }
        body = _summary(row)
        location = json.loads(plain["location_enc"]) if plain["location_enc"] else None
        body.update(
            {
                "description": plain["description_enc"],
                "address": plain["address_enc"],
                "address_id": plain["address_id_enc"],
                "account_id": plain["account_id_enc"],
                "first_name": plain["first_name_enc"],
                "last_name": plain["last_name_enc"],
                "email": plain["email_enc"],
                "phone": plain["phone_enc"],
                "media_url": plain["media_url_enc"],
                "attributes": json.loads(plain["attributes_enc"])
                if plain["attributes_enc"]
                else {},
                "lat": location[0] if location else row.lat,
                "long": location[1] if location else row.lon,
                "history": [
                    {
                        "datetime": isoformat(event.at),
                        "status": event.status,
                        "resolution": event.resolution,
                        "actor": event.actor,
                        "channel": event.channel,
                        "update_id": event.update_id,
                        "note": note_by_event.get(event.id),
                    }
                    for event in events
                ],
            }
        )
    return body


# Maximum lengths of the phone, e-mail and purpose that a search accepts, in the body and
# in the query string.
MAX_PHONE_CHARS = 64
MAX_EMAIL_CHARS = 320
MAX_PURPOSE_CHARS = 64


class FindBody(BaseModel):
    phone: str | None = Field(default=None, max_length=MAX_PHONE_CHARS)
    email: str | None = Field(default=None, max_length=MAX_EMAIL_CHARS)
    purpose: str | None = Field(default=None, max_length=MAX_PURPOSE_CHARS)


def _find(ctx: TenantContext, body: FindBody) -> dict[str, Any]:
    with unit_of_work(ctx) as session:
        rows = service.search_by_contact(
            session, ctx, email=body.email, phone=body.phone, purpose=body.purpose
        )
        return {"requests": [_summary(row) for row in rows]}


@router.post("/requests/find")
def find_requests(
    body: FindBody,
    request: Request,
    authorization: str | None = Header(default=None),
    x_api_key: str | None = Header(default=None),
) -> dict[str, Any]:
    """Return the tenant's requests filed with this phone or email, found by blind index.

    The e-mail and phone travel in the body, which proxies and access logs do not record.
    """
    ctx = _context(request, authorization, x_api_key, READ_ROLES)
    return _find(ctx, body)


@router.get("/requests/find", deprecated=True)
def find_requests_by_query(
    request: Request,
    response: Response,
    phone: str | None = Query(default=None, max_length=MAX_PHONE_CHARS),
    email: str | None = Query(default=None, max_length=MAX_EMAIL_CHARS),
    purpose: str | None = Query(default=None, max_length=MAX_PURPOSE_CHARS),
    authorization: str | None = Header(default=None),
    x_api_key: str | None = Header(default=None),
) -> dict[str, Any]:
    """Deprecated form of `POST /api/v1/requests/find`, kept for existing clients: the
    query string that carries the e-mail or phone is what proxies and access logs record."""
    ctx = _context(request, authorization, x_api_key, READ_ROLES)
    response.headers["Deprecation"] = "true"
    response.headers["Link"] = '</api/v1/requests/find>; rel="successor-version"'
    return _find(ctx, FindBody(phone=phone, email=email, purpose=purpose))


class TransferBody(BaseModel):
    to_tenant: str = Field(min_length=1, max_length=64)
    service_code: str | None = Field(default=None, max_length=64)


@router.post("/tenants/{tenant_id}/requests/{request_id}/transfer")
def transfer(
    tenant_id: str,
    request_id: str,
    body: TransferBody,
    request: Request,
    authorization: str | None = Header(default=None),
    x_api_key: str | None = Header(default=None),
) -> dict[str, Any]:
    """Move a request to the jurisdiction that handles it, keeping its id and history."""
    ctx = _context(request, authorization, x_api_key, TRANSFER_ROLES)
    _own_tenant(ctx, tenant_id)
    target = get_tenant(body.to_tenant)
    if target is None or not target.active:
        raise NotFound(f"tenant {body.to_tenant} not found", code="not_found")
    scope = SystemContext("request transfer", actor=ctx.actor)
    with unit_of_work(scope) as session:
        row = transfer_request(session, ctx, target, request_id, service_code=body.service_code)
        return _summary(row)
