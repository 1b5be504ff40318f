"""JSON API of overflow routing under `/api/v1/overflow`.

Contacts arrive from the telephony or chat system with an agent or supervisor key of the owning
tenant. Partner agents use keys whose `center_id` names their center; they see and work only the
contacts routed there. Another tenant's or another center's object returns 404.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, cast

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from failover import service
from failover.board import LiveBoard, get_board, loaded_board
from failover.models import Agreement, Contact, ContactCenter
from failover.service import Caller, NewContact
from hub.core.clock import isoformat, utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.errors import NotFound
from hub.core.tenancy import SystemContext
from hub.requests.validation import check_text
from tenants.auth import credential_for, key_from_headers, request_id_of

router = APIRouter(prefix="/api/v1/overflow", tags=["overflow"])


def current_caller(
    request: Request,
    authorization: str | None = Header(None),
    x_api_key: str | None = Header(None),
) -> Caller:
    """Resolve the key from `Authorization: Bearer` or `X-Api-Key` into a `Caller`."""
    credential = credential_for(key_from_headers(authorization, x_api_key))
    request.state.tenant_id = credential.tenant_id
    ctx = credential.context(request_id_of(request))
    return Caller(ctx=ctx, center_id=credential.center_id)


# The headers `current_caller` reads, for the OpenAPI document of routes that read them
# without declaring them as parameters.
_KEY_HEADERS = [
    {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
    for name in ("authorization", "x-api-key")
]


async def current_board() -> LiveBoard:
    """Return this process's live board. Only the first call, which loads it, runs in a thread;
    later calls return the loaded board without leaving the event loop."""
    engine = get_engine()
    board = loaded_board(engine)
    if board is None:
        board = await run_in_threadpool(get_board, engine)
    return board


def _scope(caller: Caller) -> Any:
    # Partner agents act across tenants, so their sessions are system sessions and every
    # service function filters by the credential's center.
    if caller.is_partner:
        return SystemContext(f"partner agent at {caller.center_id}", actor=caller.ctx.actor)
    return caller.ctx


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    channel: str
    language: str
    service_group: str
    external_id: str | None = None
    request_id: str | None = None
    caller_name: str | None = None
    phone: str | None = None
    address: str | None = None
    summary: str | None = None


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    outcome: str
    request_status: str | None = None
    resolution: str | None = None
    note: str | None = None


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents_staffed: int = Field(ge=0, le=100_000)
    agents_available: int = Field(ge=0, le=100_000)
    standby: bool = False


class RequestOnlyRoute(APIRoute):
    """A route whose endpoint takes the request and returns its response itself.

    FastAPI's work around an endpoint (reading the body, resolving declared parameters and
    dependencies, serializing the return value) cost about a tenth of a contact's CPU time in
    the API, on the hub's busiest route. The endpoint does that work itself, and the OpenAPI
    document takes the route's parameters and body from `openapi_extra`.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)


async def post_contact(request: Request) -> Response:
    """Store a new contact and return where it goes: home or a partner center."""
    # This route runs on the event loop, and its one short transaction blocks the loop: under
    # a millisecond of CPU and, for a contact without personal fields on PostgreSQL, one round
    # trip. A threadpool hand-off per contact cost more than that and set the latency tail
    # (p99 9 to 13 ms at 200 contacts/s, 6.5 to 8 ms without it). The engine's connect
    # timeout bounds how long an unreachable database can block the loop.
    # The key is checked before the body, so a caller without a valid key learns nothing about
    # the body's rules.
    headers = request.headers
    caller = current_caller(request, headers.get("authorization"), headers.get("x-api-key"))
    try:
        body = ContactIn.model_validate_json(await request.body())
    except ValidationError as exc:
        # The same error FastAPI raises for a declared body, with "body" first in the location.
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
    # The board comes through the app's dependency overrides, as a declared dependency would.
    board = request.app.dependency_overrides.get(current_board, current_board)()
    if inspect.isawaitable(board):
        board = await board
    view, created = service.route_new_contact(
        get_engine(), caller, board, NewContact(**body.model_dump())
    )
    return JSONResponse(view, status_code=201 if created else 200)


router.add_api_route(
    "/contacts",
    post_contact,
    methods=["POST"],
    status_code=201,
    summary="Post Contact",
    route_class_override=RequestOnlyRoute,
    openapi_extra={
        "parameters": _KEY_HEADERS,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ContactIn.model_json_schema()}},
        },
    },
)


@router.get("/contacts/{contact_id}")
def get_contact(contact_id: str, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    with unit_of_work(_scope(caller)) as session:
        contact = service.load_contact(session, caller, contact_id)
        return service.contact_view(session, caller, contact)


@router.post("/contacts/{contact_id}/claim")
def claim(contact_id: str, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    with unit_of_work(_scope(caller)) as session:
        contact = service.claim_contact(session, caller, contact_id)
        return service.contact_view(session, caller, contact)


@router.post("/contacts/{contact_id}/complete")
def complete(
    contact_id: str, body: CompleteIn, caller: Caller = Depends(current_caller)
) -> dict[str, Any]:
    with unit_of_work(_scope(caller)) as session:
        contact = service.complete_contact(session, caller, contact_id, **body.model_dump())
        return {"contact_id": contact.id, "state": contact.state, "outcome": contact.outcome}


@router.post("/contacts/{contact_id}/abandon")
def abandon(contact_id: str, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    with unit_of_work(_scope(caller)) as session:
        contact = service.abandon_contact(session, caller, contact_id)
        return {"contact_id": contact.id, "state": contact.state}


@router.post("/centers/{center_id}/heartbeat")
def heartbeat(
    center_id: str, body: HeartbeatIn, caller: Caller = Depends(current_caller)
) -> dict[str, Any]:
    with unit_of_work(SystemContext("center heartbeat", actor=caller.ctx.actor)) as session:
        beat = service.record_heartbeat(session, caller, center_id, **body.model_dump())
        return {"center_id": center_id, "at": isoformat(beat.at)}


def _visible_center(session: Session, caller: Caller, center_id: str) -> None:
    """Raise NotFound unless the caller's center, an own center or an agreed partner."""
    check_text("center_id", center_id, max_chars=service.CENTER_ID_CHARS)
    if caller.is_partner:
        service.require_partner_center(session, caller, center_id)
        return
    service.require_staff(caller)
    center = session.get(ContactCenter, center_id)
    if center is not None and center.owner_tenant_id == caller.ctx.tenant_id:
        return
    agreed = session.scalar(
        select(Agreement.id).where(
            Agreement.tenant_id == caller.ctx.tenant_id, Agreement.center_id == center_id
        )
    )
    if agreed is None:
        raise NotFound(f"center {center_id} not found", code="not_found")


@router.get("/centers/{center_id}/state")
def center_state(
    center_id: str,
    caller: Caller = Depends(current_caller),
    board: LiveBoard = Depends(current_board),
) -> dict[str, Any]:
    with unit_of_work(SystemContext("center state"), write=False) as session:
        _visible_center(session, caller, center_id)
    if center_id not in board.centers:
        board.refresh()
    if center_id not in board.centers:
        raise NotFound(f"center {center_id} not found", code="not_found")
    return board.center_view(center_id, utcnow())


@router.get("/centers/{center_id}/contacts")
def center_contacts(
    center_id: str,
    limit: int = 50,
    caller: Caller = Depends(current_caller),
) -> dict[str, Any]:
    """List the open contacts at a center, with the fields the caller may see."""
    limit = max(1, min(limit, 200))
    with unit_of_work(_scope(caller)) as session:
        contacts = service.center_contacts(session, caller, center_id, limit=limit)
        items = [service.contact_view(session, caller, c) for c in contacts]
    return {"center_id": center_id, "contacts": items}


@router.get("/status")
def supervisor_status(
    caller: Caller = Depends(current_caller),
    board: LiveBoard = Depends(current_board),
) -> dict[str, Any]:
    """Return the supervisor view: the tenant's switches, own centers and partner centers."""
    service.require_supervisor(caller)
    tenant_id = caller.ctx.tenant_id
    now = utcnow()
    with unit_of_work(caller.ctx, write=False) as session:
        routed = dict(
            session.execute(
                select(Contact.center_id, func.count())
                .where(
                    Contact.tenant_id == tenant_id,
                    Contact.agreement_id.is_not(None),
                    Contact.arrived_at >= now - timedelta(hours=1),
                )
                .group_by(Contact.center_id)
            ).all()
        )
    return board.tenant_status(tenant_id, routed, now)
