"""Field encryption: AES-256-GCM under a per-value key derived from the tenant's DEK.

Ciphertext layout (format 1):

    format (1 byte, 0x01) | DEK version (4 bytes, big-endian) | nonce (28 bytes) | ct + tag

Associated data is the length-prefixed encoding of (format, tenant id, table, column, row id,
DEK version), so a value copied to another row, column or tenant, or relabelled with another DEK
version, fails authentication.

Nonce safety: the 28-byte nonce is random. Its first 16 bytes select a per-value key,
HMAC-SHA256(DEK, label || salt), and the last 12 bytes are the GCM nonce under that key. A GCM
nonce therefore repeats under one key only if two encryptions draw the same 128-bit salt, which
has probability about n^2 / 2^129 after n encryptions (below 2^-60 for n = 2^34). The usual limit
of 2^32 random-nonce encryptions per GCM key therefore does not apply, and no automatic rotation
is needed for nonce safety. Encryptions are still counted per DEK version for the key listing.

Features encrypt with `FieldCipher` and decrypt only through `privacy.access`, which audits.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session

from hub.core.errors import HubError
from privacy.encoding import length_prefixed
from privacy.keys import Keyring
from privacy.models import KIND_DEK, KeyUsage

FORMAT_V1 = 1
_HEADER = struct.Struct(">BI")
_SALT_BYTES = 16
_GCM_NONCE_BYTES = 12
NONCE_BYTES = _SALT_BYTES + _GCM_NONCE_BYTES
_PREFIX_BYTES = _HEADER.size + NONCE_BYTES
_VALUE_KEY_LABEL = b"hub-field-value-key-v1\x00"

# A process records its encryption count for a DEK version once it reaches this many, or once
# this many seconds have passed since its previous record, whichever comes first.
USAGE_RECORD_EVERY = 1000
USAGE_RECORD_SECONDS = 60.0


class DecryptionFailed(HubError):
    """A ciphertext failed to decrypt: altered, moved, or its key is gone. Never shows data."""

    status = 500
    code = "decryption_failed"


def field_associated_data(
    tenant_id: str, table: str, column: str, row_id: str, dek_version: int
) -> bytes:
    return length_prefixed(FORMAT_V1, tenant_id, table, column, str(row_id), dek_version)


def _value_key(dek: bytes, salt: bytes) -> bytes:
    return hmac.new(dek, _VALUE_KEY_LABEL + salt, hashlib.sha256).digest()


class _UsageCounter:
    """Per-process count of encryptions per (tenant, DEK version) not yet recorded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], int] = {}
        self._since: dict[tuple[str, int], float] = {}

    def add(self, tenant_id: str, version: int, count: int = 1) -> None:
        key = (tenant_id, version)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + count
            self._since.setdefault(key, time.monotonic())

    def take_due(self, tenant_id: str, *, force: bool = False) -> list[tuple[int, int]]:
        """Remove and return (version, count) pairs of `tenant_id` that are due for recording."""
        now = time.monotonic()
        due = []
        with self._lock:
            for (tenant, version), count in list(self._pending.items()):
                if tenant != tenant_id or count == 0:
                    continue
                old = now - self._since.get((tenant, version), now) >= USAGE_RECORD_SECONDS
                if force or old or count >= USAGE_RECORD_EVERY:
                    due.append((version, count))
                    del self._pending[(tenant, version)]
                    self._since.pop((tenant, version), None)
        return due


usage_counter = _UsageCounter()


def record_usage(session: Session, tenant_id: str, *, force: bool = False) -> None:
    """Insert the encryption counts of `tenant_id` that are due into `session`."""
    for version, count in usage_counter.take_due(tenant_id, force=force):
        session.add(KeyUsage(tenant_id=tenant_id, dek_version=version, encryptions=count))


class FieldCipher:
    """Encrypts a tenant's fields under its primary DEK. Build one per unit of work."""

    def __init__(self, tenant_id: str, dek_version: int, dek: bytes) -> None:
        self.tenant_id = tenant_id
        self.dek_version = dek_version
        self._dek = dek

    @classmethod
    def for_tenant(cls, session: Session, tenant_id: str) -> FieldCipher:
        """Load the tenant's primary DEK (unwrapped keys are cached per process)."""
        ring = Keyring.load(session, tenant_id)
        version = ring.primary_version(KIND_DEK)
        record_usage(session, tenant_id)
        return cls(tenant_id, version, ring.key(KIND_DEK, version))

    def encrypt(self, table: str, column: str, row_id: str, plaintext: str | None) -> bytes | None:
        """Return the ciphertext of `plaintext` bound to its row and column; None stays None."""
        if plaintext is None:
            return None
        nonce = os.urandom(NONCE_BYTES)
        salt, gcm_nonce = nonce[:_SALT_BYTES], nonce[_SALT_BYTES:]
        associated = field_associated_data(self.tenant_id, table, column, row_id, self.dek_version)
        sealed = AESGCM(_value_key(self._dek, salt)).encrypt(
            gcm_nonce, plaintext.encode("utf-8"), associated
        )
        usage_counter.add(self.tenant_id, self.dek_version)
        return _HEADER.pack(FORMAT_V1, self.dek_version) + nonce + sealed


def ciphertext_version(blob: bytes) -> int:
    """Return the DEK version recorded in a ciphertext's header."""
    if len(blob) < _PREFIX_BYTES or blob[0] != FORMAT_V1:
        raise DecryptionFailed("ciphertext has an unknown format", code="decryption_failed")
    return _HEADER.unpack_from(blob)[1]


def decrypt_with_keyring(
    ring: Keyring, table: str, column: str, row_id: str, blob: bytes | None
) -> str | None:
    """Decrypt one value with an already loaded keyring. Internal to `privacy`."""
    if blob is None:
        return None
    blob = bytes(blob)
    version = ciphertext_version(blob)
    if (KIND_DEK, version) not in ring.rows:
        raise DecryptionFailed(
            f"ciphertext names DEK version {version}, which tenant {ring.tenant_id} does not have",
            code="decryption_failed",
        )
    dek = ring.key(KIND_DEK, version)
    nonce = blob[_HEADER.size : _PREFIX_BYTES]
    associated = field_associated_data(ring.tenant_id, table, column, row_id, version)
    try:
        plain = AESGCM(_value_key(dek, nonce[:_SALT_BYTES])).decrypt(
            nonce[_SALT_BYTES:], blob[_PREFIX_BYTES:], associated
        )
    except InvalidTag as exc:
        raise DecryptionFailed(
            f"ciphertext of {table}.{column} for row {row_id} failed authentication",
            code="decryption_failed",
        ) from exc
    return plain.decode("utf-8")


def decrypt_value(
    session: Session, tenant_id: str, table: str, column: str, row_id: str, blob: bytes | None
) -> str | None:
    """Decrypt one value without auditing. Internal to `privacy`: features use `access`."""
    if blob is None:
        return None
    return decrypt_with_keyring(Keyring.load(session, tenant_id), table, column, row_id, blob)
