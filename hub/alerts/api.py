"""JSON API of alerts, the resident opt-in endpoints and the public CAP, Atom and JSON outputs.

Emergency-manager endpoints need a key with the emergency_manager role, and another tenant's
alert returns 404. City apps subscribe residents with their Open311 key; unsubscribing needs
only the link token. The public outputs need no key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from hub.alerts import public, workflow
from hub.alerts.channels import vapid_public_key
from hub.alerts.service import REVIEW_NOTE_MAX_CHARS
from hub.alerts.subscriptions import SubscriptionInput, opt_in, unsubscribe
from hub.alerts.texts import unsubscribe_page
from hub.core.db import unit_of_work
from hub.core.errors import NotFound
from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, ROLE_OPEN311, TenantContext
from tenants.auth import require_roles
from tenants.models import Tenant

router = APIRouter(tags=["alerts"])

manager = require_roles(ROLE_EMERGENCY_MANAGER)
city_app = require_roles(ROLE_OPEN311, ROLE_EMERGENCY_MANAGER)


@router.post("/api/v1/alerts", status_code=201)
def compose_alert(
    ctx: TenantContext = Depends(manager), document: dict[str, Any] = Body(...)
) -> list[dict[str, Any]]:
    """Compose from the JSON form of CAP (element names as in the XML), plus optional
    `tenants` (other tenants of the region) and `kind` (alert or notice)."""
    cap, tenants, kind = workflow.from_mapping(dict(document))
    return workflow.compose(None, ctx, cap, tenants=tenants, kind=kind)


@router.get("/api/v1/alerts")
def list_alerts(
    ctx: TenantContext = Depends(manager), awaiting_review: bool = False
) -> list[dict[str, Any]]:
    """List the tenant's recent alerts. With `awaiting_review=true`, list only the alerts a
    single emergency manager approved and no one has reviewed yet."""
    return workflow.list_alerts(None, ctx, awaiting_review=awaiting_review)


@router.post("/api/v1/alerts/{alert_id}/approve")
def approve_alert(alert_id: str, ctx: TenantContext = Depends(manager)) -> dict[str, Any]:
    return workflow.approve(None, ctx, alert_id)


class ReviewBody(BaseModel):
    note: str | None = Field(default=None, max_length=REVIEW_NOTE_MAX_CHARS)


@router.post("/api/v1/alerts/{alert_id}/review")
def review_alert(
    alert_id: str, body: ReviewBody | None = None, ctx: TenantContext = Depends(manager)
) -> dict[str, Any]:
    """Review a single-approver alert as the key's holder, who must not have composed or
    approved it."""
    return workflow.review(None, ctx, alert_id, body.note if body else None)


@router.post("/api/v1/alerts/{alert_id}/send")
def send_alert(
    alert_id: str, approved_only: bool = False, ctx: TenantContext = Depends(manager)
) -> dict[str, Any]:
    """Start the fan-out. With `approved_only=true` a regional alert's approved parts go now
    and each other part once it is approved and sent again."""
    return workflow.send(None, ctx, alert_id, approved_only=approved_only)


@router.get("/api/v1/alerts/{alert_id}")
def alert_status(alert_id: str, ctx: TenantContext = Depends(manager)) -> list[dict[str, Any]]:
    return workflow.status(None, ctx, alert_id)


@router.get("/api/v1/alerts/{alert_id}/preview")
def alert_preview(alert_id: str, ctx: TenantContext = Depends(manager)) -> list[dict[str, Any]]:
    return workflow.preview(None, ctx, alert_id)


class SubscriptionBody(BaseModel):
    places: list[tuple[float, float]] = Field(min_length=1, max_length=10)
    languages: list[str] = Field(default_factory=list, max_length=10)
    channels: dict[str, str] = Field(min_length=1)
    test_opt_in: bool = False
    consent_at: datetime


@router.post("/api/v1/alert-subscriptions", status_code=201)
def add_subscription(
    body: SubscriptionBody, response: Response, ctx: TenantContext = Depends(city_app)
) -> dict[str, str]:
    """Opt a resident in (201), or update the subscriber with the same channels and
    addresses (200); the response carries the unsubscribe token."""
    with unit_of_work(ctx) as session:
        subscriber_id, token, created = opt_in(
            session,
            ctx,
            SubscriptionInput(
                places=list(body.places),
                languages=body.languages,
                channels=body.channels,
                consent_at=body.consent_at,
                test_opt_in=body.test_opt_in,
                source="api",
            ),
        )
    if not created:
        response.status_code = 200
    return {
        "subscriber_id": subscriber_id,
        "unsubscribe_token": token,
        "outcome": "created" if created else "updated",
    }


def _tenant_scope(tenant_id: str) -> TenantContext:
    return TenantContext(tenant_id, actor="public")


def _check_tenant(tenant_id: str) -> None:
    with unit_of_work(_tenant_scope(tenant_id), write=False) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or tenant.status != "active":
            raise NotFound(f"tenant {tenant_id} not found")


@router.get("/alerts/{tenant_id}/unsubscribe/{token}")
def unsubscribe_confirm(tenant_id: str, token: str) -> Response:
    """Show the confirmation form for the link in messages; only its POST unsubscribes."""
    with unit_of_work(_tenant_scope(tenant_id), write=False) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None or tenant.status != "active":
            raise NotFound(f"tenant {tenant_id} not found")
        languages = list(tenant.languages or [])
    return Response(unsubscribe_page(languages), media_type="text/html; charset=utf-8")


@router.post("/alerts/{tenant_id}/unsubscribe/{token}")
def unsubscribe_link(tenant_id: str, token: str) -> dict[str, str]:
    _check_tenant(tenant_id)
    with unit_of_work(_tenant_scope(tenant_id)) as session:
        unsubscribe(session, _tenant_scope(tenant_id), token)
    return {"status": "unsubscribed"}


@router.get("/alerts/{tenant_id}/vapid-public-key")
def vapid_key(tenant_id: str) -> dict[str, str]:
    """Return the key browsers pass as `applicationServerKey` to subscribe to Web Push."""
    _check_tenant(tenant_id)
    return {"public_key": vapid_public_key(tenant_id)}


@router.get("/alerts/{tenant_id}/feed.atom")
def atom_feed(tenant_id: str, request: Request) -> Response:
    _check_tenant(tenant_id)
    with unit_of_work(_tenant_scope(tenant_id), write=False) as session:
        rows = public.active_alerts(session)
    base = str(request.url_for("atom_feed", tenant_id=tenant_id)).rsplit("/", 1)[0]
    return Response(
        public.atom_feed(tenant_id, rows, base), media_type="application/atom+xml; charset=utf-8"
    )


@router.get("/alerts/{tenant_id}/active.json")
def active_json(tenant_id: str) -> list[dict[str, Any]]:
    _check_tenant(tenant_id)
    with unit_of_work(_tenant_scope(tenant_id), write=False) as session:
        return [public.alert_json(row) for row in public.active_alerts(session)]


@router.get("/alerts/{tenant_id}/{alert_id}.xml")
def alert_xml(tenant_id: str, alert_id: str) -> Response:
    _check_tenant(tenant_id)
    with unit_of_work(_tenant_scope(tenant_id), write=False) as session:
        row = public.published_alert(session, alert_id)
        document = row.cap_xml
    return Response(document, media_type="application/cap+xml; charset=utf-8")


@router.get("/alerts/{tenant_id}/{alert_id}.json")
def alert_json(tenant_id: str, alert_id: str) -> dict[str, Any]:
    _check_tenant(tenant_id)
    with unit_of_work(_tenant_scope(tenant_id), write=False) as session:
        return public.alert_json(public.published_alert(session, alert_id))
