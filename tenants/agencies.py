"""A tenant's agencies as onboarding stored them, and their webhook signing secrets.

Onboarding stores each agency's webhook secret in clear in the `agencies` table, either the
manifest's `webhook_secret` or a random one, because the hub signs every delivery with it.
Listings never include the secret. `reveal_webhook_secret` returns it and writes an audit
entry, so that each time someone reads a secret is on record.

`rotate_webhook_secret` replaces a secret with a random one and keeps the replaced one for an
overlap. During the overlap routing signs each delivery with both, so the agency can switch to
the new secret at any moment within it without a rejected delivery.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, isoformat, utcnow
from hub.core.errors import InvalidInput, NotFound
from hub.core.tenancy import TenantContext
from privacy.audit import audit
from tenants.models import Agency

REVEAL_ACTION = "agency.webhook_secret.reveal"
ROTATE_ACTION = "agency.webhook_secret.rotate"
# Hours that a rotation keeps the replaced secret when the operator gives no overlap: a working
# day for the agency to change its setting.
DEFAULT_OVERLAP_HOURS = 24.0
# Maximum overlap a rotation accepts, in hours. A week leaves time for an agency's change
# process, and a longer overlap would keep a replaced secret valid for no purpose.
MAX_OVERLAP_HOURS = 168.0


@dataclass(frozen=True)
class AgencySummary:
    """An agency without its secret: `webhook_host` is the host of its webhook URL."""

    code: str
    name: str
    webhook_host: str | None
    webhook_secret_set: bool
    active: bool
    # End of the overlap after a rotation, while deliveries are also signed with the replaced
    # secret; None when no overlap lasts.
    previous_secret_valid_until: datetime | None


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
    now = utcnow()
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
            previous_secret_valid_until=previous_secret_valid_until(row, now),
        )
        for row in rows
    ]


def new_webhook_secret() -> str:
    """Return a random webhook secret: 32 random bytes in URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def previous_secret_valid_until(agency: Agency, now: datetime) -> datetime | None:
    """Return the end of the agency's overlap after a rotation, or None when none lasts at
    `now`."""
    expires_at = agency.previous_webhook_secret_expires_at
    if not agency.previous_webhook_secret or expires_at is None:
        return None
    expires_at = as_utc(expires_at)
    return expires_at if expires_at > now else None


def previous_webhook_secret(agency: Agency, now: datetime) -> str | None:
    """Return the secret that a rotation replaced while its overlap lasts at `now`, else None."""
    if previous_secret_valid_until(agency, now) is None:
        return None
    return agency.previous_webhook_secret


def _agency(session: Session, ctx: TenantContext, code: str, *, lock: bool = False) -> Agency:
    """Return the tenant's agency `code`. With `lock`, hold its row until the transaction
    ends, so that two rotations at once take turns and neither loses its new secret."""
    query = select(Agency).where(Agency.tenant_id == ctx.tenant_id, Agency.code == code)
    row = session.scalars(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFound(
            f"agency {code!r} not found for tenant {ctx.tenant_id}; "
            "`hub tenants show` lists its agencies"
        )
    return row


def reveal_webhook_secret(session: Session, ctx: TenantContext, code: str) -> str:
    """Return the webhook signing secret of agency `code` and audit the read.

    Raises NotFound when the tenant has no agency `code` or the agency has no secret.
    """
    row = _agency(session, ctx, code)
    if not row.webhook_secret:
        raise NotFound(
            f"agency {code!r} of tenant {ctx.tenant_id} has no webhook secret; "
            "onboard the manifest again to generate one"
        )
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action=REVEAL_ACTION,
        subject=f"agencies:{row.id}",
        details={"agency_code": row.code},
    )
    return row.webhook_secret


@dataclass(frozen=True)
class RotatedSecret:
    """Outcome of `rotate_webhook_secret`: the new secret, and the end of the overlap during
    which deliveries also carry a signature made with the replaced one (None for no overlap)."""

    secret: str
    previous_valid_until: datetime | None


def check_overlap_hours(value: float, *, field: str = "overlap_hours") -> float:
    """Return `value` when it is a number of hours from 0 to `MAX_OVERLAP_HOURS`.

    Raises InvalidInput naming `field` otherwise.
    """
    if not (math.isfinite(value) and 0 <= value <= MAX_OVERLAP_HOURS):
        raise InvalidInput(
            f"invalid {field} {value}: give the hours to keep the replaced secret, from 0 "
            f"(replace it at once) to {MAX_OVERLAP_HOURS:g}",
            field=field,
        )
    return value


def rotate_webhook_secret(
    session: Session,
    ctx: TenantContext,
    code: str,
    *,
    overlap_hours: float = DEFAULT_OVERLAP_HOURS,
    now: datetime | None = None,
) -> RotatedSecret:
    """Give agency `code` a new random webhook secret and audit the rotation.

    The replaced secret stays valid for `overlap_hours` after `now`: until then routing signs
    each delivery with both. With 0 it stops at once, which is what a leaked secret needs. A
    rotation during an earlier overlap drops the secret that overlap kept. Raises NotFound
    when the tenant has no agency `code`, and InvalidInput for an overlap outside 0 to
    `MAX_OVERLAP_HOURS`.
    """
    check_overlap_hours(overlap_hours)
    now = now or utcnow()
    row = _agency(session, ctx, code, lock=True)
    replaced = row.webhook_secret
    valid_until = now + timedelta(hours=overlap_hours) if replaced and overlap_hours else None

    row.webhook_secret = new_webhook_secret()
    row.previous_webhook_secret = replaced if valid_until else None
    row.previous_webhook_secret_expires_at = valid_until
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action=ROTATE_ACTION,
        subject=f"agencies:{row.id}",
        details={
            "agency_code": row.code,
            "overlap_hours": overlap_hours,
            "previous_valid_until": isoformat(valid_until),
        },
    )
    return RotatedSecret(row.webhook_secret, valid_until)
