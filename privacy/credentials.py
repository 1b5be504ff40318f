"""Credentials that the hub presents for a tenant, such as agency webhook signing secrets.

They are stored as field ciphertexts under the tenant's DEK (`privacy.fields.FieldCipher`),
bound to their table, column and row, in a table registered with `privacy.registry`. DEK
rotation therefore re-encrypts them, and crypto-shredding the tenant's keys makes them
unreadable. Unlike personal data, the hub decrypts them itself for its own work, such as
signing each delivery, so `decrypt_credential` writes no `pii.decrypt` audit entry. The
feature that owns a credential audits each read by a person.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from privacy.fields import decrypt_with_keyring
from privacy.keys import Keyring


def decrypt_credential(
    session: Session, tenant_id: str, table: str, column: str, row_id: str, blob: bytes | None
) -> str | None:
    """Decrypt one credential with the tenant's keys as loaded once per session.

    None stays None. Raises DecryptionFailed when the value was altered, moved to another row
    or column, or its DEK version is gone, and NotFound when the tenant has no keys (never
    onboarded, or crypto-shredded).
    """
    if blob is None:
        return None
    ring = Keyring.for_session(session, tenant_id)
    return decrypt_with_keyring(ring, table, column, str(row_id), blob)
