"""A tenant's agencies as onboarding stored them, and their webhook signing secrets.

Onboarding stores each agency's webhook secret in clear in the `agencies` table, either the
manifest's `webhook_secret` or a random one, because the hub signs every delivery with it.
Listings never include the secret. `reveal_webhook_secret` returns it and writes an audit
entry, so that each time someone reads a secret is on record.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.errors import NotFound
from hub.core.tenancy import TenantContext
from privacy.audit import audit
from tenants.models import Agency


@dataclass(frozen=True)
class AgencySummary:
    """An agency without its secret: `webhook_host` is the host of its webhook URL."""

    code: str
    name: str
    webhook_host: str | None
    webhook_secret_set: bool
    active: bool


def webhook_host(url: str | None) -> str | None:
    """Return the host (and port, when given) of a webhook URL, without path or credentials."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def list_agencies(session: Session, ctx: TenantContext) -> list[AgencySummary]:
    """Return the tenant's agencies by code, active or not, without their secrets."""
    rows = session.scalars(
        select(Agency).where(Agency.tenant_id == ctx.tenant_id).order_by(Agency.code)
    )
    return [
        AgencySummary(
            code=row.code,
            name=row.name,
            webhook_host=webhook_host(row.webhook_url),
            webhook_secret_set=bool(row.webhook_secret),
            active=row.active,
        )
        for row in rows
    ]


def reveal_webhook_secret(session: Session, ctx: TenantContext, code: str) -> str:
    """Return the webhook signing secret of agency `code` and audit the read.

    Raises NotFound when the tenant has no agency `code` or the agency has no secret.
    """
    row = session.scalars(
        select(Agency).where(Agency.tenant_id == ctx.tenant_id, Agency.code == code)
    ).first()
    if row is None:
        raise NotFound(
            f"agency {code!r} not found for tenant {ctx.tenant_id}; "
            "`hub tenants show` lists its agencies"
        )
    if not row.webhook_secret:
        raise NotFound(
            f"agency {code!r} of tenant {ctx.tenant_id} has no webhook secret; "
            "onboard the manifest again to generate one"
        )
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action="agency.webhook_secret.reveal",
        subject=f"agencies:{row.id}",
        details={"agency_code": row.code},
    )
    return row.webhook_secret
