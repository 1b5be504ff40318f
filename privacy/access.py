"""The only decryption path for features: checks the caller's role and writes the audit entry.

Auditors never decrypt, whatever other roles their credential carries. Every call names a
purpose (a short code such as `staff.request_view`), which the audit entry and the privacy
report's "decryptions by role and purpose" evidence record. The purpose must be declared, by the
hub's code or by the tenant's manifest (see `privacy.purposes`). A rejected call (an auditor's,
or one for an undeclared purpose) and a failed one (a value altered, moved, or whose key is
gone) are audited too, in a transaction of their own, because the caller's error usually rolls
its transaction back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import event, text
from sqlalchemy.orm import Session, SessionTransaction

from hub.core.db import engine_of, is_postgres, unit_of_work
from hub.core.errors import Forbidden, InvalidInput
from hub.core.tenancy import ROLE_AUDITOR, SystemContext, TenantContext
from privacy.audit import audit
from privacy.fields import decrypt_with_keyring
from privacy.keys import Keyring
from privacy.metrics import DECRYPTIONS
from privacy.purposes import PURPOSE, PURPOSE_RULE, has_metric_label, is_hub_purpose, staff_purposes

ACTION_DECRYPT = "pii.decrypt"
ACTION_DECRYPT_BATCH = "pii.decrypt_batch"
ACTION_DECRYPT_REJECTED = "pii.decrypt_rejected"
# Error code and audited reason of a decryption for a purpose the tenant has not declared.
UNDECLARED_PURPOSE = "undeclared_purpose"
# Rejected and failed decryptions of a session, audited once its transaction ends.
_REJECTIONS = "decryption_rejections"
# How long the rejection's own transaction waits for the tenant's audit chain. Without the
# limit it would wait forever when a transaction of the same thread has locked the chain.
_REJECTION_LOCK_TIMEOUT = "5s"

log = structlog.get_logger(__name__)
# Metric label of a purpose that only a manifest declares, or that no one declares.
OTHER_PURPOSE = "other"


def purpose_label(purpose: str) -> str:
    """Return the metric label of `purpose`: itself when the hub or the default staff
    purposes declare it, else `OTHER_PURPOSE`. The audit entry keeps every purpose as given."""
    return purpose if has_metric_label(purpose) else OTHER_PURPOSE


Blobs = dict[str, bytes | None]


def _check_caller(
    session: Session,
    ctx: TenantContext,
    table: str,
    purpose: str,
    subject: str,
    *,
    by_staff: bool = False,
) -> None:
    """Reject an auditor, and a purpose that is neither the hub's nor a staff purpose of the
    tenant. With `by_staff` (a purpose a person gave), a hub purpose counts only when the
    tenant also declares it for staff."""
    if not PURPOSE.match(purpose):
        raise InvalidInput(
            f"decryption purpose {purpose!r} is invalid; {PURPOSE_RULE}", code="invalid_purpose"
        )
    if ctx.has_role(ROLE_AUDITOR):
        error = Forbidden(
            "the auditor role cannot decrypt personal data", code="auditor_no_decrypt"
        )
        _rejected(session, ctx, table=table, purpose=purpose, subject=subject, error=error)
        raise error
    if is_hub_purpose(purpose) and not by_staff:
        return
    staff = [p.code for p in staff_purposes(session, ctx.tenant_id)]
    if purpose not in staff:
        declared = (
            f"is one the hub uses for its own work, not one tenant {ctx.tenant_id} declares "
            "for staff"
            if is_hub_purpose(purpose)
            else f"is not declared by tenant {ctx.tenant_id}"
        )
        error = InvalidInput(
            f"decryption purpose {purpose!r} {declared}; use one of the purposes it "
            f"declares for staff ({', '.join(staff)}), or add it to "
            "privacy.decryption_purposes in the tenant's manifest",
            code=UNDECLARED_PURPOSE,
        )
        _rejected(session, ctx, table=table, purpose=purpose, subject=subject, error=error)
        raise error


def check_caller(
    session: Session, ctx: TenantContext, table: str, row_id: str, *, purpose: str
) -> None:
    """Reject the caller, or the purpose a person named in the staff API or CLI, before
    anything is read.

    Unlike `decrypt_fields`, which also serves the hub's own work, it accepts only the
    tenant's staff purposes, so a person cannot decrypt under a hub purpose such as
    `agency_delivery`. Rejections are audited as `pii.decrypt_rejected`.
    """
    _check_caller(session, ctx, table, purpose, f"{table}:{row_id}", by_staff=True)


def _rejected(
    session: Session,
    ctx: TenantContext,
    *,
    table: str,
    purpose: str,
    subject: str,
    error: Exception,
    **counts: int,
) -> None:
    """Count a rejected or failed decryption, and keep its audit entry for the end of the
    session's transaction."""
    rejected = isinstance(error, Forbidden) or getattr(error, "code", None) == UNDECLARED_PURPOSE
    outcome = "forbidden" if rejected else "failed"
    DECRYPTIONS.labels(table=table, purpose=purpose_label(purpose), outcome=outcome).inc()
    entry = {
        "tenant_id": ctx.tenant_id,
        "actor": ctx.actor,
        "subject": subject,
        "details": {
            "purpose": purpose,
            "table": table,
            "reason": getattr(error, "code", None) or type(error).__name__,
            "roles": sorted(ctx.roles),
            "request_id": ctx.request_id,
            **counts,
        },
    }
    session.info.setdefault(_REJECTIONS, []).append(entry)
    # The entry is written when the transaction ends, so one must have begun, even when the
    # caller was rejected before the session ran any statement. Beginning it takes no
    # connection, so no database lock is held before the caller's next statement.
    if not session.in_transaction():
        session.begin()


@event.listens_for(Session, "after_transaction_end")
def _audit_rejections(session: Session, transaction: SessionTransaction) -> None:
    """Write the session's rejected and failed decryptions, each in a transaction of its own,
    once its outermost transaction has ended. A savepoint's end does not count: the caller's
    transaction may then hold the audit chain's lock, which the new transaction would wait for.

    A failure here is logged and not raised, so the caller's own error propagates.
    """
    if transaction.parent is not None:
        return
    rejections: list[dict[str, Any]] = session.info.pop(_REJECTIONS, None) or []
    for entry in rejections:
        scope = SystemContext("rejected decryption audit", actor=entry["actor"])
        try:
            with unit_of_work(scope, engine=engine_of(session)) as own:
                if is_postgres(own):
                    own.execute(
                        text("SELECT set_config('lock_timeout', :timeout, true)"),
                        {"timeout": _REJECTION_LOCK_TIMEOUT},
                    )
                audit(own, action=ACTION_DECRYPT_REJECTED, **entry)
        except Exception as exc:  # noqa: BLE001 - the rejection itself is in effect
            log.error(
                "decryption_rejection_not_audited",
                tenant_id=entry["tenant_id"],
                actor=entry["actor"],
                reason=entry["details"]["reason"],
                error=type(exc).__name__,
            )


def _record_decryption(
    session: Session,
    ctx: TenantContext,
    *,
    action: str,
    subject: str,
    table: str,
    purpose: str,
    columns: set[str],
    **counts: int,
) -> None:
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action=action,
        subject=subject,
        details={
            "purpose": purpose,
            "table": table,
            "columns": sorted(columns),
            "roles": sorted(ctx.roles),
            "request_id": ctx.request_id,
            **counts,
        },
    )
    DECRYPTIONS.labels(table=table, purpose=purpose_label(purpose), outcome="ok").inc()


def decrypt_fields(
    session: Session,
    ctx: TenantContext,
    table: str,
    row_id: str,
    blobs: Blobs,
    *,
    purpose: str,
) -> dict[str, str | None]:
    """Decrypt the columns of one row for `purpose` and write one audit entry.

    `blobs` maps column names to ciphertexts (None stays None). Raises Forbidden for auditors
    and DecryptionFailed when a value was altered, moved or its key is gone.
    """
    subject = f"{table}:{row_id}"
    _check_caller(session, ctx, table, purpose, subject)
    ring = Keyring.load(session, ctx.tenant_id)
    try:
        plain = {
            column: decrypt_with_keyring(ring, table, column, row_id, blob)
            for column, blob in blobs.items()
        }
    except Exception as exc:
        _rejected(session, ctx, table=table, purpose=purpose, subject=subject, error=exc)
        raise

    _record_decryption(
        session,
        ctx,
        action=ACTION_DECRYPT,
        subject=subject,
        table=table,
        purpose=purpose,
        columns={c for c, blob in blobs.items() if blob is not None},
    )
    return plain


def decrypt_rows(
    session: Session,
    ctx: TenantContext,
    table: str,
    rows: Sequence[tuple[str, Blobs]],
    *,
    purpose: str,
) -> list[dict[str, str | None]]:
    """Decrypt many rows of one table for `purpose` (exports) with one audit entry per batch.

    `rows` contains (row id, blobs) pairs; the result keeps their order.
    """
    subject = f"{table}:batch"
    _check_caller(session, ctx, table, purpose, subject)
    ring = Keyring.load(session, ctx.tenant_id)
    columns: set[str] = set()
    out = []
    try:
        for row_id, blobs in rows:
            out.append(
                {
                    column: decrypt_with_keyring(ring, table, column, row_id, blob)
                    for column, blob in blobs.items()
                }
            )
            columns.update(c for c, blob in blobs.items() if blob is not None)
    except Exception as exc:
        # The entry names the row that failed, which the loop was at.
        failed = f"{table}:{row_id}"
        _rejected(
            session, ctx, table=table, purpose=purpose, subject=failed, error=exc, rows=len(rows)
        )
        raise

    _record_decryption(
        session,
        ctx,
        action=ACTION_DECRYPT_BATCH,
        subject=subject,
        table=table,
        purpose=purpose,
        columns=columns,
        rows=len(rows),
    )
    return out
