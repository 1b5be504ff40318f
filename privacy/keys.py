"""The key hierarchy: root key (KeyProvider) -> per-tenant KEK -> DEKs, index and audit keys.

The root key never leaves its provider; it wraps each tenant's KEK. The KEK wraps the tenant's
versioned data keys. Each wrap is AES-256-GCM with a random 96-bit nonce. Its associated data
names the key's kind, tenant and version (and the KEK version for keys under a KEK), so a
wrapped key copied to another tenant or version fails to unwrap. Random nonces are safe here
because a wrapping key wraps at most a few thousand keys in its life.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, event, select
from sqlalchemy.orm import Session

from hub.core.clock import utcnow
from hub.core.db import advisory_xact_lock, readable_tenant
from hub.core.errors import ConfigurationError, HubError, NotFound
from hub.core.settings import Settings, get_settings
from privacy.encoding import length_prefixed
from privacy.models import KEY_KINDS, KIND_AUDIT, KIND_DEK, KIND_INDEX, KIND_KEK, TenantKey

log = structlog.get_logger(__name__)

KEY_BYTES = 32
_NONCE_BYTES = 12
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_MAX_PLACEHOLDER_DISTINCT_BYTES = 16


class KeyUnwrapFailed(HubError):
    """A wrapped key failed authentication: wrong root key, or key material was altered."""

    status = 500
    code = "key_unwrap_failed"


class KeyProvider(ABC):
    """Holder of the root key. Vault Transit or a cloud KMS fit behind the same three calls."""

    @property
    @abstractmethod
    def key_id(self) -> str:
        """Identifier of the current root key, stored beside each KEK it wraps."""

    @abstractmethod
    def wrap(self, key: bytes, associated_data: bytes) -> tuple[str, bytes]:
        """Encrypt `key` under the current root key, bound to `associated_data`. Return that
        root key's id with the blob. Both are read together, so a rotation cannot come between
        them."""

    @abstractmethod
    def unwrap(self, blob: bytes, associated_data: bytes, *, key_id: str) -> bytes:
        """Decrypt a blob made by `wrap` under the root key named `key_id`."""

    @abstractmethod
    def derive(self, purpose: str) -> bytes:
        """Return a 32-byte hub-wide secret for `purpose` (audit signing, hub-wide HMACs).

        The result stays the same across root key rotations, unless a rotation replaces the
        derivation key as well (`hub privacy rotate-root --new-derived-keys`)."""


def aes_wrap(wrapping_key: bytes, key: bytes, associated_data: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(wrapping_key).encrypt(nonce, key, associated_data)


def aes_unwrap(wrapping_key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    try:
        return AESGCM(wrapping_key).decrypt(
            blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], associated_data
        )
    except InvalidTag as exc:
        raise KeyUnwrapFailed(
            "a wrapped key failed authentication", code="key_unwrap_failed"
        ) from exc


def root_key_id(root_key: bytes) -> str:
    """Fingerprint of a root key: the first 16 hex digits of SHA-256 over a label and the key."""
    return hashlib.sha256(b"hub-root-key-id\x00" + root_key).hexdigest()[:16]


def _looks_like_placeholder(key: bytes) -> bool:
    """Return True when `key` has too few distinct byte values to be random, as a typed
    pattern such as `deadbeef` or `0123456789abcdef` repeated has.

    32 random bytes have 16 or fewer distinct values with a probability of about 2e-15 (the
    count of such byte strings over 256^32), so a generated key is practically never rejected.
    """
    return len(set(key)) <= _MAX_PLACEHOLDER_DISTINCT_BYTES


def parse_root_key(raw: bytes, path: Path) -> bytes:
    """Read a root key file's bytes: 64 hex digits (optionally with a trailing newline)."""
    text = raw.strip()
    if not _HEX_KEY.match(text.decode("ascii", errors="replace")):
        raise ConfigurationError(
            f"root key file {path} is invalid: expected 64 hex digits (256 bits); "
            f"write a new one with `hub privacy rotate-root` or "
            f"`python -c 'import secrets; print(secrets.token_hex(32))' > {path}`"
        )
    return bytes.fromhex(text.decode("ascii"))


def write_root_key(path: Path, key: bytes) -> None:
    """Create `path` with mode 0600 holding `key` as hex; an existing file is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")


def load_root_key(path: Path, *, production: bool) -> bytes:
    """Read the root key at `path`, creating it outside production when it is missing.

    In production a missing key, a key readable by group or others, and a placeholder value
    all raise ConfigurationError naming the path and the fix.
    """
    if not path.exists():
        if production:
            raise ConfigurationError(
                f"root key file {path} is missing; create it with "
                f"`umask 077; python -c 'import secrets; print(secrets.token_hex(32))' > {path}` "
                f"or point HUB_ROOT_KEY_FILE at your key"
            )
        try:
            write_root_key(path, secrets.token_bytes(KEY_BYTES))
            log.info("root_key_created", path=str(path))
        except FileExistsError:
            pass  # another process created it first; read theirs

    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        if production:
            raise ConfigurationError(
                f"root key file {path} has mode {mode:o} and is readable by group or others; "
                f"run `chmod 600 {path}`"
            )
        log.warning("root_key_permissions_too_open", path=str(path), mode=f"{mode:o}")

    raw = path.read_bytes()
    key = parse_root_key(raw, path)
    if _looks_like_placeholder(key):
        if production:
            raise ConfigurationError(
                f"invalid root key file {path}: it contains a placeholder value; replace it "
                "with 64 random hex digits from "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        log.warning("root_key_placeholder", path=str(path))
    return key


# The derivation key behind `KeyProvider.derive`. Until the first root rotation it is computed
# from the root key. A rotation stores it beside the key file, wrapped under the new root key.
# The secrets derived from it then stay the same after the rotation: the audit signing key,
# webhook secrets, Web Push keys, unsubscribe links and audit subject HMACs.
_DERIVATION_LABEL = b"hub-derivation-key\x00"
_DERIVATION_AD = b"hub-derivation-key-v1"


def derivation_path(path: Path) -> Path:
    """Return the path of the wrapped derivation key file beside root key file `path`."""
    return path.with_name(f"{path.name}.derivation")


def initial_derivation_key(root_key: bytes) -> bytes:
    """Return the derivation key of a root key file that no rotation has replaced yet."""
    return hmac.new(root_key, _DERIVATION_LABEL, hashlib.sha256).digest()


def read_derivation_key(path: Path, root_keys: dict[str, bytes], current: bytes) -> bytes:
    """Return the derivation key for root key file `path`: the stored one, unwrapped with the
    root key it names among `root_keys`, or the initial one of `current` when none is stored."""
    stored = derivation_path(path)
    if not stored.exists():
        return initial_derivation_key(current)
    key_id, _, blob = stored.read_text(encoding="ascii").strip().partition(" ")
    root = root_keys.get(key_id)
    if root is None:
        raise ConfigurationError(
            f"derivation key file {stored} is wrapped under root key {key_id}, which is not "
            f"available; restore {path.name}.{key_id}.previous beside {path}"
        )
    return aes_unwrap(root, bytes.fromhex(blob), _DERIVATION_AD)


def write_derivation_key(path: Path, derivation_key: bytes, root_key: bytes) -> None:
    """Store `derivation_key` for root key file `path`, wrapped under `root_key`. The file is
    replaced in one step, so a reader sees the old or the new one, never a part."""
    stored = derivation_path(path)
    partial = stored.with_name(f"{stored.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        blob = aes_wrap(root_key, derivation_key, _DERIVATION_AD)
        handle.write(f"{root_key_id(root_key)} {blob.hex()}\n")
    os.replace(partial, stored)


def _previous_root_keys(path: Path) -> dict[str, bytes]:
    """Read the root keys replaced by `hub privacy rotate-root` that are still kept.

    They stay beside the current file as `<name>.<key id>.previous` until every KEK is
    re-wrapped under the new key.
    """
    keys = {}
    for old in sorted(path.parent.glob(f"{path.name}.*.previous")):
        old_key = parse_root_key(old.read_bytes(), old)
        keys[root_key_id(old_key)] = old_key
    return keys


class LocalKeyProvider(KeyProvider):
    """The embedded default: a 256-bit root key in a file of mode 0600.

    During root rotation the provider also keeps the previous keys, so KEKs wrapped under any
    of them still unwrap until they are re-wrapped. A provider with a key file follows it:
    after another process rotated the root key, the next `wrap` uses the new key and the next
    `derive` the derivation key stored with it.
    """

    def __init__(
        self,
        root_key: bytes,
        previous: dict[str, bytes] | None = None,
        *,
        path: Path | None = None,
        production: bool = False,
        derivation_key: bytes | None = None,
    ) -> None:
        if len(root_key) != KEY_BYTES:
            raise ConfigurationError("root key must be 32 bytes (256 bits)")
        self._keys = dict(previous or {})
        self._path = path
        self._production = production
        self._lock = threading.Lock()
        self._use(root_key, derivation_key or initial_derivation_key(root_key))

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalKeyProvider:
        path = settings.effective_root_key_file
        key = load_root_key(path, production=settings.is_production)
        previous = _previous_root_keys(path)
        derivation = read_derivation_key(path, {**previous, root_key_id(key): key}, key)
        return cls(
            key, previous, path=path, production=settings.is_production, derivation_key=derivation
        )

    def _use(self, root_key: bytes, derivation_key: bytes) -> None:
        self._key = root_key
        self._key_id = root_key_id(root_key)
        self._keys[self._key_id] = root_key
        self._derivation = derivation_key
        self._file_version = self._version_of_file()

    def _version_of_file(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            status = self._path.stat()
        except FileNotFoundError:
            # `rotate-root` moves the file away for a moment before it writes the new one.
            return None
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def _follow_file(self) -> None:
        """Switch to the key file's current root key when another process replaced it."""
        version = self._version_of_file()
        if version is None or version == self._file_version:
            return
        with self._lock:
            if version == self._file_version:
                return
            current = self._reload()
            assert self._path is not None
            derivation = read_derivation_key(self._path, self._keys, current)
            self._use(current, derivation)
            log.info("root_key_followed", key_id=self._key_id)

    def _reload(self) -> bytes:
        """Add the keys now in the files (current and previous) and return the current one.
        The key that `wrap` uses does not change here."""
        assert self._path is not None
        current = load_root_key(self._path, production=self._production)
        self._keys.update(_previous_root_keys(self._path))
        self._keys[root_key_id(current)] = current
        return current

    @property
    def key_id(self) -> str:
        self._follow_file()
        return self._key_id

    @property
    def derivation_key(self) -> bytes:
        """The key behind `derive`, for `rotate-root` to store under the new root key."""
        self._follow_file()
        return self._derivation

    def store_derivation_key(self, derivation_key: bytes) -> None:
        """Write `derivation_key` beside the key file, wrapped under the current root key."""
        assert self._path is not None
        self._follow_file()
        with self._lock:
            write_derivation_key(self._path, derivation_key, self._key)
            self._derivation = derivation_key

    def wrap(self, key: bytes, associated_data: bytes) -> tuple[str, bytes]:
        self._follow_file()
        root, key_id = self._key, self._key_id
        return key_id, aes_wrap(root, key, associated_data)

    def unwrap(self, blob: bytes, associated_data: bytes, *, key_id: str) -> bytes:
        root = self._keys.get(key_id)
        if root is None and self._path is not None:
            # Another process may have rotated the root key since this one started.
            self._reload()
            root = self._keys.get(key_id)
        if root is None:
            raise KeyUnwrapFailed(
                f"root key {key_id} is not available to this process; restore its file "
                f"or finish root rotation",
                code="root_key_missing",
            )
        return aes_unwrap(root, blob, associated_data)

    def derive(self, purpose: str) -> bytes:
        self._follow_file()
        return hmac.new(
            self._derivation, b"hub-derive\x00" + purpose.encode(), hashlib.sha256
        ).digest()


_providers: dict[str, KeyProvider] = {}
_providers_lock = threading.Lock()


def get_key_provider(settings: Settings | None = None) -> KeyProvider:
    """Return the process-wide provider for the configured root key file."""
    settings = settings or get_settings()
    last = _last_provider
    if last is not None and last[0] is settings:
        return last[1]
    cache_key = str(settings.effective_root_key_file.resolve())
    with _providers_lock:
        provider = _providers.get(cache_key)
        if provider is None:
            provider = LocalKeyProvider.from_settings(settings)
            _providers[cache_key] = provider
        _remember_provider(settings, provider)
        return provider


# The provider for the settings object seen last: `get_settings()` returns one object per
# process, so this skips resolving the root key path on every call.
_last_provider: tuple[Settings, KeyProvider] | None = None


def _remember_provider(settings: Settings, provider: KeyProvider) -> None:
    global _last_provider
    _last_provider = (settings, provider)


def forget_key_provider() -> None:
    """Drop cached providers and unwrapped keys (after root rotation, in tests)."""
    global _last_provider
    with _providers_lock:
        _providers.clear()
        _last_provider = None
    clear_key_cache()


# Unwrapped keys cached per process, keyed by tenant, kind, version and a digest of the wrapped
# bytes. Every use re-reads the wrapped rows from the database, so a shredded or re-wrapped key
# is never served from this cache: its row, and therefore its cache key, is gone.
_unwrapped: dict[tuple[str, str, int, bytes], bytes] = {}
_unwrapped_lock = threading.Lock()
_CACHE_LIMIT = 10_000


def clear_key_cache(tenant_id: str | None = None) -> None:
    with _unwrapped_lock:
        if tenant_id is None:
            _unwrapped.clear()
            return
        for cache_key in [k for k in _unwrapped if k[0] == tenant_id]:
            del _unwrapped[cache_key]


def kek_associated_data(tenant_id: str, version: int) -> bytes:
    return length_prefixed("hub-kek-v1", tenant_id, version)


def data_key_associated_data(kind: str, tenant_id: str, version: int, kek_version: int) -> bytes:
    return length_prefixed("hub-key-v1", kind, tenant_id, version, kek_version)


_SESSION_RINGS = "privacy_keyrings"

# The columns a keyring reads, as a Core statement: `Keyring.for_session` runs it on every POST.
_KEYS = TenantKey.__table__.c
_KEY_ROWS = select(
    _KEYS.kind, _KEYS.version, _KEYS.wrapped_by, _KEYS.wrapped, _KEYS.retired_at
).where(_KEYS.tenant_id == bindparam("tenant_id"))


@event.listens_for(Session, "before_flush")
def _forget_session_rings(session: Session, _context: object, _instances: object) -> None:
    if _SESSION_RINGS not in session.info:
        return
    changed = (*session.new, *session.dirty, *session.deleted)
    if any(isinstance(obj, TenantKey) for obj in changed):
        session.info.pop(_SESSION_RINGS, None)


@event.listens_for(Session, "after_soft_rollback")
def _forget_rings_on_rollback(session: Session, _previous: object) -> None:
    session.info.pop(_SESSION_RINGS, None)


@dataclass
class Keyring:
    """A tenant's wrapped key rows, loaded in one query, unwrapping on demand."""

    tenant_id: str
    rows: dict[tuple[str, int], TenantKey] = field(default_factory=dict)
    provider: KeyProvider | None = None
    ciphers: dict[tuple[str, int], AESGCM] = field(default_factory=dict)

    @classmethod
    def for_session(cls, session: Session, tenant_id: str) -> Keyring:
        """Return the tenant's keyring loaded once per session, for code that only uses keys.

        Intake encrypts fields and computes blind indexes in one transaction; reading the key
        rows once serves all of them. A flush that adds, changes or deletes key rows drops the
        session's copy, and rotation code calls `load` for a fresh read.
        """
        rings: dict[str, Keyring] = session.info.setdefault(_SESSION_RINGS, {})
        ring = rings.get(tenant_id)
        if ring is None:
            # Plain rows instead of ORM instances: this copy only reads keys, and building
            # instances was a tenth of a POST's CPU time.
            readable = readable_tenant(session, tenant_id)
            rows = (
                session.connection().execute(_KEY_ROWS, {"tenant_id": readable}).all()
                if readable
                else []
            )
            ring = rings[tenant_id] = cls._of_rows(tenant_id, rows)
        return ring

    @classmethod
    def load(cls, session: Session, tenant_id: str) -> Keyring:
        """Return the tenant's key rows as ORM instances, which rotation code changes."""
        rows = session.scalars(select(TenantKey).where(TenantKey.tenant_id == tenant_id)).all()
        return cls._of_rows(tenant_id, rows)

    @classmethod
    def _of_rows(cls, tenant_id: str, rows: Sequence[Any]) -> Keyring:
        if not rows:
            raise NotFound(
                f"tenant {tenant_id} has no encryption keys; it was never onboarded or its "
                f"keys were crypto-shredded",
                code="tenant_keys_missing",
            )
        ring = cls(tenant_id=tenant_id, provider=get_key_provider())
        for row in rows:
            ring.rows[(row.kind, row.version)] = row
        return ring

    def versions(self, kind: str) -> list[int]:
        return sorted(v for (k, v) in self.rows if k == kind)

    def primary_version(self, kind: str) -> int:
        active = [v for (k, v), row in self.rows.items() if k == kind and row.retired_at is None]
        if not active:
            raise NotFound(
                f"tenant {self.tenant_id} has no active {kind} key; run "
                f"`hub privacy rotate --tenant {self.tenant_id} --dek` to create one",
                code="tenant_keys_missing",
            )
        return max(active)

    def aead(self, kind: str, version: int) -> AESGCM:
        """Return an AES-GCM object for the key, built once per loaded keyring."""
        cached = self.ciphers.get((kind, version))
        if cached is None:
            cached = AESGCM(self.key(kind, version))
            self.ciphers[(kind, version)] = cached
        return cached

    def key(self, kind: str, version: int) -> bytes:
        """Return the unwrapped key of `kind` at `version`; NotFound when it does not exist."""
        row = self.rows.get((kind, version))
        if row is None:
            raise NotFound(
                f"tenant {self.tenant_id} has no {kind} key version {version}",
                code="key_version_missing",
            )
        cache_key = (self.tenant_id, kind, version, hashlib.sha256(row.wrapped).digest())
        with _unwrapped_lock:
            cached = _unwrapped.get(cache_key)
        if cached is not None:
            return cached

        assert self.provider is not None
        if kind == KIND_KEK:
            key = self.provider.unwrap(
                row.wrapped, kek_associated_data(self.tenant_id, version), key_id=row.wrapped_by
            )
        else:
            kek_version = int(row.wrapped_by)
            kek = self.key(KIND_KEK, kek_version)
            key = aes_unwrap(
                kek,
                row.wrapped,
                data_key_associated_data(kind, self.tenant_id, version, kek_version),
            )
        with _unwrapped_lock:
            if len(_unwrapped) >= _CACHE_LIMIT:
                _unwrapped.clear()
            _unwrapped[cache_key] = key
        return key


# First key of the advisory lock that serializes changes to one tenant's key rows; the second is
# the hash of the tenant id.
_KEY_CHANGE_LOCK_CLASS = 311_0004
# The advisory lock of a change to every tenant's KEK (a root key rotation). A change of one
# tenant's keys takes it shared, and a root rotation takes it exclusively.
_ALL_KEYS_LOCK_CLASS = 311_0005
_ALL_KEYS_LOCK_KEY = "root"


def lock_tenant_keys(session: Session, tenant_id: str) -> None:
    """Hold the tenant's key-change lock until the transaction ends.

    Every change that wraps a key under the tenant's KEK, replaces the KEK or shreds the keys
    takes it before it reads the key rows. Without it, a KEK rotation that read the rows
    before a concurrent DEK rotation committed would delete the KEK that still wraps the new
    DEK, and every value encrypted under that DEK would be lost. It also waits for a root
    rotation in progress (`lock_all_tenant_keys`).
    """
    advisory_xact_lock(session, _ALL_KEYS_LOCK_CLASS, _ALL_KEYS_LOCK_KEY, shared=True)
    advisory_xact_lock(session, _KEY_CHANGE_LOCK_CLASS, tenant_id)


def lock_all_tenant_keys(session: Session) -> None:
    """Take the key-change lock of every tenant until the transaction ends, for a root rotation
    that re-wraps every KEK.

    It waits for the key changes of single tenants in progress, because they could replace or
    delete a KEK row that the rotation is re-wrapping.
    """
    advisory_xact_lock(session, _ALL_KEYS_LOCK_CLASS, _ALL_KEYS_LOCK_KEY)


def new_kek_row(provider: KeyProvider, tenant_id: str, version: int) -> tuple[TenantKey, bytes]:
    """Build a row for a new KEK wrapped by the root key; return it with the unwrapped KEK."""
    kek = secrets.token_bytes(KEY_BYTES)
    wrapped_by, wrapped = provider.wrap(kek, kek_associated_data(tenant_id, version))
    row = TenantKey(
        tenant_id=tenant_id,
        kind=KIND_KEK,
        version=version,
        wrapped_by=wrapped_by,
        wrapped=wrapped,
        created_at=utcnow(),
    )
    return row, kek


def new_data_key_row(
    ring: Keyring, kind: str, version: int, *, key: bytes | None = None
) -> TenantKey:
    """Build a row for a new (or given) key of `kind` at `version`, wrapped by the primary KEK."""
    if kind not in KEY_KINDS or kind == KIND_KEK:
        raise ValueError(f"not a data key kind: {kind}")
    kek_version = ring.primary_version(KIND_KEK)
    kek = ring.key(KIND_KEK, kek_version)
    key = key if key is not None else secrets.token_bytes(KEY_BYTES)
    return TenantKey(
        tenant_id=ring.tenant_id,
        kind=kind,
        version=version,
        wrapped_by=str(kek_version),
        wrapped=aes_wrap(
            kek, key, data_key_associated_data(kind, ring.tenant_id, version, kek_version)
        ),
        created_at=utcnow(),
    )


def create_tenant_keys(session: Session, tenant_id: str) -> None:
    """Create a tenant's KEK and the first DEK, index key and audit key; idempotent.

    Called at onboarding, after the tenant row is added. A tenant that already has a KEK is
    left as it is, and only missing kinds are added.
    """
    lock_tenant_keys(session, tenant_id)
    existing = {
        (row.kind, row.version)
        for row in session.scalars(select(TenantKey).where(TenantKey.tenant_id == tenant_id))
    }
    kinds = {kind for kind, _ in existing}
    if kinds >= set(KEY_KINDS):
        return

    session.flush()  # the tenant row must exist before rows that reference it
    provider = get_key_provider()
    ring = Keyring(tenant_id=tenant_id, provider=provider)
    if KIND_KEK not in kinds:
        kek_row, _ = new_kek_row(provider, tenant_id, 1)
        session.add(kek_row)
        ring.rows[(KIND_KEK, 1)] = kek_row
    else:
        ring = Keyring.load(session, tenant_id)

    for kind in (KIND_DEK, KIND_INDEX, KIND_AUDIT):
        if kind not in kinds:
            row = new_data_key_row(ring, kind, 1)
            session.add(row)
            ring.rows[(kind, 1)] = row
    session.flush()

    # Imported here because privacy.audit imports this module.
    from privacy.audit import audit

    audit(
        session,
        tenant_id=tenant_id,
        actor="system",
        action="keys.create",
        details={"kinds": sorted(set(KEY_KINDS) - kinds), "root_key_id": provider.key_id},
    )
    log.info("tenant_keys_created", tenant_id=tenant_id)
