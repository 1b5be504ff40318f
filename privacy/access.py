"""The only decryption path for features: checks the caller's role and writes the audit entry.

Auditors never decrypt, whatever other roles their credential carries. Every call names a
purpose (a short code such as `staff.request_view`), which the audit entry and the privacy
report's "decryptions by role and purpose" evidence record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.orm import Session

from hub.core.errors import Forbidden, InvalidInput
from hub.core.tenancy import ROLE_AUDITOR, TenantContext
from privacy.audit import audit
from privacy.fields import decrypt_with_keyring
from privacy.keys import Keyring
from privacy.metrics import DECRYPTIONS

ACTION_DECRYPT = "pii.decrypt"
ACTION_DECRYPT_BATCH = "pii.decrypt_batch"
_PURPOSE = re.compile(r"^[a-z][a-z0-9_.:-]{1,63}$")
_PURPOSE_RULE = (
    "use 2-64 lower-case letters, digits and . _ : - starting with a letter, "
    "such as staff.request_view"
)
# Purposes that code declares with `declare_purpose`. The metric labels name these, and count
# any other purpose (one a staff member gives to the API or CLI) as "other", so that callers
# cannot add series without end. The audit entry keeps every purpose as given.
_DECLARED_PURPOSES: set[str] = set()
OTHER_PURPOSE = "other"


def declare_purpose(purpose: str) -> str:
    """Register a decryption purpose that code uses, and return it."""
    if not _PURPOSE.match(purpose):
        raise ValueError(f"decryption purpose {purpose!r} is invalid; {_PURPOSE_RULE}")
    _DECLARED_PURPOSES.add(purpose)
    return purpose


def purpose_label(purpose: str) -> str:
    """Return the metric label of `purpose`: itself when declared, else `OTHER_PURPOSE`."""
    return purpose if purpose in _DECLARED_PURPOSES else OTHER_PURPOSE


Blobs = dict[str, bytes | None]


def _check_caller(ctx: TenantContext, table: str, purpose: str) -> None:
    if not _PURPOSE.match(purpose):
        raise InvalidInput(
            f"decryption purpose {purpose!r} is invalid; {_PURPOSE_RULE}", code="invalid_purpose"
        )
    if ctx.has_role(ROLE_AUDITOR):
        DECRYPTIONS.labels(table=table, purpose=purpose_label(purpose), outcome="forbidden").inc()
        raise Forbidden("the auditor role cannot decrypt personal data", code="auditor_no_decrypt")


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
    _check_caller(ctx, table, purpose)
    ring = Keyring.load(session, ctx.tenant_id)
    try:
        plain = {
            column: decrypt_with_keyring(ring, table, column, row_id, blob)
            for column, blob in blobs.items()
        }
    except Exception:
        DECRYPTIONS.labels(table=table, purpose=purpose_label(purpose), outcome="failed").inc()
        raise

    _record_decryption(
        session,
        ctx,
        action=ACTION_DECRYPT,
        subject=f"{table}:{row_id}",
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
    _check_caller(ctx, table, purpose)
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
    except Exception:
        DECRYPTIONS.labels(table=table, purpose=purpose_label(purpose), outcome="failed").inc()
        raise

    _record_decryption(
        session,
        ctx,
        action=ACTION_DECRYPT_BATCH,
        subject=f"{table}:batch",
        table=table,
        purpose=purpose,
        columns=columns,
        rows=len(rows),
    )
    return out
