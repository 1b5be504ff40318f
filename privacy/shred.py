"""Crypto-shredding of a tenant's keys, and sealing an export to a tenant's public key.

Sealed format (version 1):

    b"HUBSEAL1" | ephemeral X25519 public key (32 bytes) | nonce (12 bytes) | AES-256-GCM ct

The AES key is HKDF-SHA256 over the X25519 shared secret, with the ephemeral and recipient
public keys as `info`, so each sealed file has its own key. The nonce is random; a key is used
for exactly one message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hub.core.errors import InvalidInput
from privacy.audit import audit
from privacy.keys import clear_key_cache, lock_tenant_keys
from privacy.models import KeyUsage, TenantKey

log = structlog.get_logger(__name__)

SEAL_MAGIC = b"HUBSEAL1"
# The audit action of a crypto-shredding; the privacy report finds the shredding by it.
ACTION_CRYPTO_SHRED = "keys.crypto_shred"
_RAW_PUBLIC = (Encoding.Raw, PublicFormat.Raw)
KeyType = TypeVar("KeyType", X25519PublicKey, X25519PrivateKey)


def crypto_shred(session: Session, tenant_id: str, *, actor: str) -> int:
    """Destroy the tenant's KEK, DEKs, index keys and audit key; return how many were deleted.

    Afterwards none of the tenant's ciphertexts or blind indexes can be recomputed or
    decrypted. Other tenants' keys are untouched. The shredding itself is audited.
    """
    # A key change still uncommitted when the DELETE runs would otherwise add a key after it.
    lock_tenant_keys(session, tenant_id)
    kinds = sorted(
        set(session.scalars(select(TenantKey.kind).where(TenantKey.tenant_id == tenant_id)))
    )
    result = session.execute(delete(TenantKey).where(TenantKey.tenant_id == tenant_id))
    session.execute(delete(KeyUsage).where(KeyUsage.tenant_id == tenant_id))
    deleted = int(result.rowcount or 0)
    clear_key_cache(tenant_id)
    audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=ACTION_CRYPTO_SHRED,
        details={"keys_destroyed": deleted, "kinds": kinds},
    )
    log.info("tenant_keys_shredded", tenant_id=tenant_id, keys=deleted)
    return deleted


def _load_x25519(
    data: bytes,
    kind: str,
    key_type: type[KeyType],
    from_pem: Callable[[bytes], object],
    from_raw: Callable[[bytes], KeyType],
) -> KeyType:
    """Read an X25519 `kind` ("public" or "private") key given as PEM, 64 hex digits or 32
    raw bytes, or raise InvalidInput."""
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = from_pem(text)
            if not isinstance(key, key_type):
                raise InvalidInput(f"{kind} key is not an X25519 key; generate one with X25519")
            return key
        if len(text) == 64:
            return from_raw(bytes.fromhex(text.decode("ascii")))
        if len(data) == 32:
            return from_raw(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{kind} key could not be read: {exc}") from exc
    raise InvalidInput(
        f"{kind} key is invalid; give an X25519 key as PEM, 64 hex digits or 32 raw bytes"
    )


def load_public_key(data: bytes) -> X25519PublicKey:
    """Read an X25519 public key given as PEM, 64 hex digits or 32 raw bytes."""
    return _load_x25519(
        data, "public", X25519PublicKey, load_pem_public_key, X25519PublicKey.from_public_bytes
    )


def load_private_key(data: bytes) -> X25519PrivateKey:
    """Read an X25519 private key given as unencrypted PEM, 64 hex digits or 32 raw bytes."""
    return _load_x25519(
        data,
        "private",
        X25519PrivateKey,
        lambda pem: load_pem_private_key(pem, password=None),
        X25519PrivateKey.from_private_bytes,
    )


def _seal_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"hub-seal-v1" + ephemeral + recipient,
    ).derive(shared)


def seal(recipient: X25519PublicKey, plaintext: bytes) -> bytes:
    """Encrypt `plaintext` so only the holder of the recipient's private key can read it."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(*_RAW_PUBLIC)
    recipient_public = recipient.public_bytes(*_RAW_PUBLIC)
    key = _seal_key(ephemeral.exchange(recipient), ephemeral_public, recipient_public)
    nonce = os.urandom(12)
    return SEAL_MAGIC + ephemeral_public + nonce + AESGCM(key).encrypt(nonce, plaintext, SEAL_MAGIC)


def open_sealed(private_key: X25519PrivateKey, blob: bytes) -> bytes:
    """Decrypt a blob made by `seal` (the tenant's side, and tests)."""
    if not blob.startswith(SEAL_MAGIC) or len(blob) < len(SEAL_MAGIC) + 44 + 16:
        raise InvalidInput("file is not a sealed hub export (missing HUBSEAL1 header)")
    offset = len(SEAL_MAGIC)
    ephemeral_public = blob[offset : offset + 32]
    nonce = blob[offset + 32 : offset + 44]
    recipient_public = private_key.public_key().public_bytes(*_RAW_PUBLIC)
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    key = _seal_key(shared, ephemeral_public, recipient_public)
    try:
        return AESGCM(key).decrypt(nonce, blob[offset + 44 :], SEAL_MAGIC)
    except InvalidTag as exc:
        raise InvalidInput(
            "sealed export failed authentication: wrong key or altered file"
        ) from exc
