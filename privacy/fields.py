"""Field encryption: AES-256-GCM under the tenant's DEK, with a versioned ciphertext format.

Ciphertext layout (format 1):

    format (1 byte, 0x01) | DEK version (4 bytes, big-endian) | nonce (12 bytes) | ct + tag

Associated data is the length-prefixed encoding of (format, tenant id, table, column, row id,
DEK version), so a value copied to another row, column or tenant, or relabelled with another DEK
version, fails authentication.

Nonce safety: nonces are 96 random bits, so the chance that two encryptions under one DEK
share a nonce is about n^2 / 2^97 after n encryptions. NIST SP 800-38D caps random-nonce GCM at
2^32 encryptions per key. Encryptions are counted per DEK version in `KeyUsage` rows. Once a
version passes `ROTATE_AFTER` (2^28, a 16-fold margin with a collision chance below 2^-40), the
next count record queues an automatic DEK rotation. At `HARD_LIMIT` (2^31) encryption under
that version is refused. Each process records its counts every `USAGE_RECORD_EVERY`
encryptions or `USAGE_RECORD_SECONDS`, and the rest by `record_pending_usage` when it stops. A
process killed without that step loses at most one period's count, far inside the margin.

Features encrypt with `FieldCipher` and decrypt only through `privacy.access`, which audits.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from functools import lru_cache

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from hub.core.db import get_engine, unit_of_work
from hub.core.errors import HubError, Unavailable
from hub.core.outbox import enqueue
from hub.core.tasks import QUEUE_MAINTENANCE
from hub.core.tenancy import TenantContext
from privacy.encoding import length_prefixed
from privacy.keys import Keyring
from privacy.models import KIND_DEK, KeyUsage

log = structlog.get_logger(__name__)

FORMAT_V1 = 1
_HEADER = struct.Struct(">BI")
_LENGTH = struct.Struct(">I")  # the length prefix of privacy.encoding.length_prefixed
NONCE_BYTES = 12
_PREFIX_BYTES = _HEADER.size + NONCE_BYTES
_TAG_BYTES = 16
MIN_CIPHERTEXT_BYTES = _PREFIX_BYTES + _TAG_BYTES

# A process records its encryption count for a DEK version once it reaches this many, or once
# this many seconds have passed since its previous record, whichever comes first.
USAGE_RECORD_EVERY = 1000
USAGE_RECORD_SECONDS = 60.0
ROTATE_AFTER = 2**28
HARD_LIMIT = 2**31
# Task (declared in privacy.tasks) that rotates a tenant's DEK once its count passes the limit.
ROTATE_IF_DUE_TASK = "privacy.rotate_dek_if_due"


class _NonceSource:
    """Random nonces drawn from the OS in blocks, because one `os.urandom` call per value
    costs more than the encryption. A forked child discards the parent's block, so two
    processes never hand out the same bytes."""

    _BLOCK = NONCE_BYTES * 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._buffer = b""
        self._offset = 0

    def take(self) -> bytes:
        with self._lock:
            if self._offset + NONCE_BYTES > len(self._buffer):
                self._buffer = os.urandom(self._BLOCK)
                self._offset = 0
            start = self._offset
            self._offset = start + NONCE_BYTES
            return self._buffer[start : self._offset]

    def take_many(self, count: int) -> bytes:
        """Return `count` nonces back to back, drawn fresh from the OS in one call."""
        return os.urandom(NONCE_BYTES * count)


_nonces = _NonceSource()
os.register_at_fork(after_in_child=_nonces._reset)


class DecryptionFailed(HubError):
    """A ciphertext failed to decrypt: altered, moved, or its key is gone. Never shows data."""

    status = 500
    code = "decryption_failed"


@lru_cache(maxsize=4096)
def _associated_prefix(tenant_id: str, table: str, column: str) -> bytes:
    return length_prefixed(FORMAT_V1, tenant_id, table, column)


@lru_cache(maxsize=1024)
def _associated_suffix(dek_version: int) -> bytes:
    return length_prefixed(dek_version)


def field_associated_data(
    tenant_id: str, table: str, column: str, row_id: str, dek_version: int
) -> bytes:
    """Return length_prefixed(format, tenant, table, column, row id, DEK version)."""
    # The row id part is `_bound_id` written out, because this runs for every encryption.
    raw = row_id.encode("utf-8")
    return (
        _associated_prefix(tenant_id, table, column)
        + _LENGTH.pack(len(raw))
        + raw
        + _associated_suffix(dek_version)
    )


class _UsageCounter:
    """Per-process count of encryptions per (database, tenant, DEK version) not yet recorded.

    The database is part of the key because one process may encrypt in several, such as a
    benchmark's scratch database beside the configured one, and each count belongs where its
    ciphertexts are stored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, int], int] = {}
        self._since: dict[tuple[str, str, int], float] = {}

    def add(self, database: str, tenant_id: str, version: int, count: int = 1) -> None:
        key = (database, tenant_id, version)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + count
            self._since.setdefault(key, time.monotonic())

    def pending(self) -> dict[str, list[str]]:
        """Return the tenants with encryptions not yet recorded, by database."""
        by_database: dict[str, set[str]] = {}
        with self._lock:
            for (database, tenant, _version), count in self._pending.items():
                if count:
                    by_database.setdefault(database, set()).add(tenant)
        return {database: sorted(tenants) for database, tenants in sorted(by_database.items())}

    def take_due(
        self, database: str, tenant_id: str, *, force: bool = False
    ) -> list[tuple[int, int]]:
        """Remove and return (version, count) pairs of `tenant_id` in `database` that are due
        for recording."""
        now = time.monotonic()
        due = []
        with self._lock:
            for key, count in list(self._pending.items()):
                key_database, tenant, version = key
                if key_database != database or tenant != tenant_id or count == 0:
                    continue
                old = now - self._since.get(key, now) >= USAGE_RECORD_SECONDS
                if force or old or count >= USAGE_RECORD_EVERY:
                    due.append((version, count))
                    del self._pending[key]
                    self._since.pop(key, None)
        return due


usage_counter = _UsageCounter()


@lru_cache(maxsize=64)
def _database_of_engine(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def database_of(session: Session) -> str:
    """Return the URL of the database `session` writes to, as the usage counter keys it."""
    return _database_of_engine(session.get_bind().engine)


def record_usage(session: Session, tenant_id: str, *, force: bool = False) -> None:
    """Insert the encryption counts of `tenant_id` in the session's database that are due,
    and act on the limits.

    Past ROTATE_AFTER the tenant's DEK rotation is queued (the task checks again, so repeats
    are harmless); past HARD_LIMIT encryption under that version raises Unavailable. Every due
    count is added to the session before it raises, so a caller that catches the error and
    commits keeps them all.

    NOTE: the counts roll back with the caller's transaction, and a caller that lets
    Unavailable propagate always rolls back. The count that crossed HARD_LIMIT is then lost, so
    the next record passes again: the limit rejects one unit of work per record, not every
    encryption after it.
    """
    exhausted = None
    for version, count in usage_counter.take_due(database_of(session), tenant_id, force=force):
        session.add(KeyUsage(tenant_id=tenant_id, dek_version=version, encryptions=count))
        total = encryption_count(session, tenant_id, version)
        if total >= HARD_LIMIT:
            exhausted = version
        elif total >= ROTATE_AFTER:
            log.warning("dek_rotation_due", tenant_id=tenant_id, dek_version=version)
            enqueue(session, ROTATE_IF_DUE_TASK, queue=QUEUE_MAINTENANCE, tenant_id=tenant_id)
    if exhausted is not None:
        raise Unavailable(
            f"DEK version {exhausted} of tenant {tenant_id} reached its encryption limit; "
            f"run `hub privacy rotate --tenant {tenant_id} --dek`",
            code="dek_exhausted",
        )


def record_pending_usage() -> None:
    """Record this process's pending encryption counts in the databases where they were made,
    one transaction per tenant.

    Each process calls this before it exits, because a short run such as `hub import` ends
    before the next periodic record. Errors are logged and not raised, so the exit goes on,
    and a database that cannot be reached is given up after its first error rather than
    waited for once per tenant.
    """
    for database, tenants in usage_counter.pending().items():
        engine = get_engine(database)
        for tenant_id in tenants:
            try:
                with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
                    try:
                        record_usage(session, tenant_id, force=True)
                    except Unavailable as exc:
                        # The counts are in the session, so they commit with it.
                        log.error("dek_exhausted", tenant_id=tenant_id, error=str(exc))
            except OperationalError as exc:
                log.error(
                    "encryption_counts_not_recorded",
                    tenant_ids=tenants,
                    error=type(exc).__name__,
                    database=engine.url.render_as_string(hide_password=True),
                )
                break
            except (SQLAlchemyError, HubError) as exc:
                log.error("encryption_counts_not_recorded", tenant_id=tenant_id, error=str(exc))


def encryption_count(session: Session, tenant_id: str, version: int) -> int:
    """Sum the recorded encryptions under one DEK version (pending rows included)."""
    total = session.scalar(
        select(func.sum(KeyUsage.encryptions)).where(
            KeyUsage.tenant_id == tenant_id, KeyUsage.dek_version == version
        )
    )
    return int(total or 0)


class FieldCipher:
    """Encrypts a tenant's fields under its primary DEK. Build one per unit of work."""

    def __init__(self, tenant_id: str, dek_version: int, dek: bytes, *, database: str) -> None:
        self.tenant_id = tenant_id
        self.dek_version = dek_version
        # Where the ciphertexts go, for the usage counter.
        self.database = database
        self._aead = AESGCM(dek)
        self._header = _HEADER.pack(FORMAT_V1, dek_version)

    @classmethod
    def for_tenant(cls, session: Session, tenant_id: str) -> FieldCipher:
        """Load the tenant's primary DEK (unwrapped keys are cached per process)."""
        ring = Keyring.for_session(session, tenant_id)
        version = ring.primary_version(KIND_DEK)
        record_usage(session, tenant_id)
        return cls(tenant_id, version, ring.key(KIND_DEK, version), database=database_of(session))

    def encrypt(self, table: str, column: str, row_id: str, plaintext: str | None) -> bytes | None:
        """Return the ciphertext of `plaintext` bound to its row and column; None stays None."""
        if plaintext is None:
            return None
        nonce = _nonces.take()
        associated = field_associated_data(
            self.tenant_id, table, column, str(row_id), self.dek_version
        )
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), associated)
        usage_counter.add(self.database, self.tenant_id, self.dek_version)
        return self._header + nonce + sealed


def ciphertext_version(blob: bytes) -> int:
    """Return the DEK version recorded in a ciphertext's header."""
    if len(blob) < MIN_CIPHERTEXT_BYTES or blob[0] != FORMAT_V1:
        raise DecryptionFailed("ciphertext has an unknown format", code="decryption_failed")
    return _HEADER.unpack_from(blob)[1]


def _open_sealed(
    ring: Keyring, table: str, column: str, row_id: str, blob: bytes, bound_id: bytes
) -> tuple[int, bytes]:
    """Authenticate and decrypt one ciphertext; return its DEK version and the plaintext bytes.

    `bound_id` is the length-prefixed row id part of the associated data.
    """
    version = ciphertext_version(blob)
    if (KIND_DEK, version) not in ring.rows:
        raise DecryptionFailed(
            f"ciphertext names DEK version {version}, which tenant {ring.tenant_id} does not have",
            code="decryption_failed",
        )
    associated = _associated_prefix(ring.tenant_id, table, column) + bound_id
    try:
        plain = ring.aead(KIND_DEK, version).decrypt(
            blob[_HEADER.size : _PREFIX_BYTES],
            blob[_PREFIX_BYTES:],
            associated + _associated_suffix(version),
        )
    except InvalidTag as exc:
        raise DecryptionFailed(
            f"ciphertext of {table}.{column} for row {row_id} failed authentication",
            code="decryption_failed",
        ) from exc
    return version, plain


def _bound_id(row_id: str) -> bytes:
    raw = row_id.encode("utf-8")
    return _LENGTH.pack(len(raw)) + raw


# Re-encryption meets each row id once per ciphertext column, so it looks them up here. Field
# encryption at intake meets each id once and uses `_bound_id` directly.
_cached_bound_id = lru_cache(maxsize=8192)(_bound_id)


def decrypt_with_keyring(
    ring: Keyring, table: str, column: str, row_id: str, blob: bytes | None
) -> str | None:
    """Decrypt one value with an already loaded keyring. Internal to `privacy`."""
    if blob is None:
        return None
    row_id = str(row_id)
    _version, plain = _open_sealed(ring, table, column, row_id, bytes(blob), _bound_id(row_id))
    return plain.decode("utf-8")


def reencrypt_values(
    ring: Keyring,
    cipher: FieldCipher,
    table: str,
    column: str,
    values: list[tuple[str, bytes | None]],
) -> list[bytes | None]:
    """Decrypt each (row id, ciphertext) of one column and encrypt it again under `cipher`.

    Gives the same result as `decrypt_with_keyring` followed by `cipher.encrypt` per value,
    but keeps the plaintext as bytes and draws the nonces and records the usage count once per
    call, which is what makes re-encryption after a DEK rotation fast. None stays None.
    """
    present = sum(1 for _row_id, blob in values if blob is not None)
    nonces = _nonces.take_many(present)
    prefix = _associated_prefix(cipher.tenant_id, table, column)
    new_suffix = _associated_suffix(cipher.dek_version)
    seal = cipher._aead.encrypt
    header = cipher._header
    # Per stored DEK version: its AEAD and associated-data suffix, looked up once per call.
    openers: dict[int, tuple[AESGCM, bytes]] = {}
    out: list[bytes | None] = []
    offset = 0
    for row_id, stored in values:
        if stored is None:
            out.append(None)
            continue
        blob = bytes(stored)
        bound_id = _cached_bound_id(row_id)
        opener = None
        if len(blob) >= MIN_CIPHERTEXT_BYTES and blob[0] == FORMAT_V1:
            version = _HEADER.unpack_from(blob)[1]
            opener = openers.get(version)
            if opener is None and (KIND_DEK, version) in ring.rows:
                opener = (ring.aead(KIND_DEK, version), _associated_suffix(version))
                openers[version] = opener
        try:
            if opener is None:
                raise InvalidTag
            plain = opener[0].decrypt(
                blob[_HEADER.size : _PREFIX_BYTES],
                blob[_PREFIX_BYTES:],
                prefix + bound_id + opener[1],
            )
        except InvalidTag:
            # Bad format, unknown version or failed authentication: the checked path raises
            # DecryptionFailed with the reason.
            _version, plain = _open_sealed(ring, table, column, row_id, blob, bound_id)
        nonce = nonces[offset : offset + NONCE_BYTES]
        offset += NONCE_BYTES
        out.append(header + nonce + seal(nonce, plain, prefix + bound_id + new_suffix))
    if present:
        usage_counter.add(cipher.database, cipher.tenant_id, cipher.dek_version, present)
    return out


def decrypt_value(
    session: Session, tenant_id: str, table: str, column: str, row_id: str, blob: bytes | None
) -> str | None:
    """Decrypt one value without auditing. Internal to `privacy`: features use `access`."""
    if blob is None:
        return None
    return decrypt_with_keyring(Keyring.load(session, tenant_id), table, column, row_id, blob)
