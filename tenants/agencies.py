"""A tenant's agencies as onboarding stored them, and their webhook signing secrets.

Each agency's webhook secret is the manifest's `webhook_secret` or a random one. The hub
signs every delivery with it, so it must be able to read it. The `agencies` table stores it
encrypted under the tenant's DEK like personal data, bound to the agency's row and column
(`privacy.credentials`). `webhook_secrets` is the one function that decrypts the secrets, and
`_seal_webhook_secrets` the one that encrypts them. Listings never include a secret.
`reveal_webhook_secret` returns it and writes an audit entry, so that each time someone reads
a secret is on record.

`rotate_webhook_secret` replaces a secret with a random one and keeps the replaced one for an
overlap. During the overlap routing signs each delivery with both, so the agency can switch to
the new secret at any moment within it without a rejected delivery.

Onboarding records a keyed digest of the manifest secret it applied (`apply_manifest_secret`).
When a later onboarding finds that same secret in the manifest after a rotation replaced it,
it keeps the rotated secret instead of putting the old one back.
"""

from __future__ import annotations

import hmac
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
from privacy.blind_index import blind_index_normalized, blind_indexes_normalized
from privacy.credentials import decrypt_credential
from privacy.fields import FieldCipher
from tenants.models import AGENCY_SECRET_COLUMNS, Agency

AGENCIES_TABLE = Agency.__tablename__
SECRET_COLUMN, PREVIOUS_SECRET_COLUMN = AGENCY_SECRET_COLUMNS
# Blind index kind of the manifest secret digest. The agency code is part of it, so the same
# secret given to two agencies gets two different digests.
_MANIFEST_DIGEST_KIND = "agency_manifest_webhook_secret"
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
    # The manifest's cap on deliveries per minute to this agency; None when it has none.
    max_deliveries_per_minute: float | None = None


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
            webhook_secret_set=row.webhook_secret_enc is not None,
            active=row.active,
            previous_secret_valid_until=previous_secret_valid_until(row, now),
            max_deliveries_per_minute=row.max_deliveries_per_minute,
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
    if agency.previous_webhook_secret_enc is None or expires_at is None:
        return None
    expires_at = as_utc(expires_at)
    return expires_at if expires_at > now else None


@dataclass(frozen=True)
class WebhookSecrets:
    """An agency's webhook secrets in clear: `current` signs every delivery, and `previous`,
    the secret that a rotation replaced, signs them too while the overlap lasts."""

    current: str | None
    previous: str | None


def webhook_secrets(
    session: Session, agency: Agency, *, now: datetime | None = None
) -> WebhookSecrets:
    """Decrypt the agency's webhook secrets, with `previous` None unless its overlap lasts at
    `now`. It writes no audit entry, because the hub reads the secrets for every delivery.
    Callers that show a secret to a person audit that read.

    Raises DecryptionFailed when a ciphertext was altered or moved from another agency, and
    NotFound when the tenant's keys are gone (crypto-shredded at offboarding).
    """
    current = _decrypt(session, agency, SECRET_COLUMN, agency.webhook_secret_enc)
    previous = None
    if previous_secret_valid_until(agency, now or utcnow()) is not None:
        previous = _decrypt(
            session, agency, PREVIOUS_SECRET_COLUMN, agency.previous_webhook_secret_enc
        )
    return WebhookSecrets(current, previous)


def _decrypt(session: Session, agency: Agency, column: str, blob: bytes | None) -> str | None:
    return decrypt_credential(session, agency.tenant_id, AGENCIES_TABLE, column, agency.id, blob)


def _seal_webhook_secrets(
    session: Session, agency: Agency, current: str | None, previous: str | None
) -> None:
    """Encrypt both secrets of `agency` under the tenant's primary DEK, bound to its row.

    Both columns share the row's `dek_version`, so the previous secret is encrypted again
    with the current one. A new row is flushed first, because the ciphertexts are bound to its
    generated id.
    """
    if agency.id is None:
        session.flush()
    cipher = FieldCipher.for_tenant(session, agency.tenant_id)
    row_id = str(agency.id)
    agency.webhook_secret_enc = cipher.encrypt(AGENCIES_TABLE, SECRET_COLUMN, row_id, current)
    agency.previous_webhook_secret_enc = cipher.encrypt(
        AGENCIES_TABLE, PREVIOUS_SECRET_COLUMN, row_id, previous
    )
    agency.dek_version = cipher.dek_version
    if previous is None:
        agency.previous_webhook_secret_expires_at = None


def _same_secret(first: str | None, second: str) -> bool:
    return first is not None and hmac.compare_digest(first.encode(), second.encode())


def _manifest_digest_kind(agency: Agency) -> str:
    return f"{_MANIFEST_DIGEST_KIND}:{agency.code}"


def _is_applied_manifest_secret(session: Session, agency: Agency, secret: str) -> bool:
    """Return whether `secret` is the manifest secret that onboarding applied last, checked
    against its digest under every index key version the tenant has."""
    if agency.manifest_secret_digest is None:
        return False
    digests = blind_indexes_normalized(
        session, agency.tenant_id, _manifest_digest_kind(agency), secret
    )
    stored = agency.manifest_secret_digest.encode()
    return any(hmac.compare_digest(stored, digest.encode()) for digest in digests.values())


def manifest_secret_replaced(session: Session, agency: Agency, secret: str) -> bool:
    """Return whether the manifest `webhook_secret` of `agency` is the one onboarding applied
    last and a rotation has replaced since, so the manifest line is left over and must go."""
    if _same_secret(webhook_secrets(session, agency).current, secret):
        return False
    return _is_applied_manifest_secret(session, agency, secret)


def apply_manifest_secret(session: Session, agency: Agency, secret: str | None) -> bool:
    """Set the webhook secret of `agency` from its manifest entry at onboarding.

    Without a manifest secret the stored one stays, and an agency with none gets a random
    one. A manifest secret that `manifest_secret_replaced` reports is left out, so the rotated
    secret stays, and the result is False. Any other manifest secret replaces the stored one,
    and its keyed digest is recorded. The previous secret of a rotation and its overlap stay
    as they are. Returns True unless the manifest secret was left out.
    """
    stored = webhook_secrets(session, agency)
    if secret is None:
        if stored.current is None:
            _seal_webhook_secrets(session, agency, new_webhook_secret(), stored.previous)
        return True
    if _same_secret(stored.current, secret):
        _record_manifest_secret(session, agency, secret)
        return True
    if _is_applied_manifest_secret(session, agency, secret):
        return False
    _seal_webhook_secrets(session, agency, secret, stored.previous)
    _record_manifest_secret(session, agency, secret)
    return True


def _record_manifest_secret(session: Session, agency: Agency, secret: str) -> None:
    digest, _version = blind_index_normalized(
        session, agency.tenant_id, _manifest_digest_kind(agency), secret
    )
    if agency.manifest_secret_digest != digest:
        agency.manifest_secret_digest = digest


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
    secret = webhook_secrets(session, row).current
    if not secret:
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
    return secret


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
    each delivery with both. With 0 it stops at once, which is what a leaked secret needs,
    and a stored secret that fails to decrypt can be replaced. A rotation during an earlier
    overlap drops the secret that overlap kept. Raises NotFound when the tenant has no agency
    `code`, InvalidInput for an overlap outside 0 to `MAX_OVERLAP_HOURS`, and
    DecryptionFailed when an overlap needs a stored secret that fails to decrypt.
    """
    check_overlap_hours(overlap_hours)
    now = now or utcnow()
    row = _agency(session, ctx, code, lock=True)
    # With no overlap the replaced secret is not needed, so it is not decrypted. A stored
    # secret that no longer decrypts can then still be replaced.
    replaced = webhook_secrets(session, row, now=now).current if overlap_hours else None
    valid_until = now + timedelta(hours=overlap_hours) if replaced and overlap_hours else None

    secret = new_webhook_secret()
    _seal_webhook_secrets(session, row, secret, replaced if valid_until else None)
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
    return RotatedSecret(secret, valid_until)
