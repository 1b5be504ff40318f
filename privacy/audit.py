"""The append-only, hash-chained audit log and its signed checkpoints.

Each tenant has its own chain (`chain` = tenant id) and hub-wide events go to the `hub` chain.
An entry's hash covers its canonical JSON encoding, which includes the previous entry's hash, so
changing, removing, inserting or reordering entries breaks every later link. Every
`CHECKPOINT_EVERY` entries the head of the chain is signed with Ed25519, so a verifier holding
the public key can tell a consistent rewrite of the whole chain from the real one.

The retention purge deletes a tenant chain's entries past the `audit` period from its start
(`privacy.retention.purge_audit_batch`). The chain then starts after its anchor, the last
deleted entry's seq and hash signed by `sign_anchor`, and its first kept entry links to it.

Appends to one chain are serialized: on PostgreSQL by a transaction-scoped advisory lock on the
chain, on SQLite by the write lock that every writing transaction takes at BEGIN IMMEDIATE.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, utcnow
from hub.core.db import advisory_xact_lock
from hub.core.errors import NotFound
from privacy.encoding import length_prefixed
from privacy.keys import Keyring, get_key_provider
from privacy.metrics import AUDIT_ENTRIES
from privacy.models import KIND_AUDIT, AuditAnchor, AuditCheckpoint, AuditEntry, AuditHead

log = structlog.get_logger(__name__)

HUB_CHAIN = "hub"
GENESIS_HASH = "0" * 64
CHECKPOINT_EVERY = 256
# First key of the two-key advisory lock that serializes appends; the second is the chain's hash.
_ADVISORY_LOCK_CLASS = 311_0003
_MAX_DETAIL_STRING = 200
_SCALARS = (str, int, float, bool, type(None))


def chain_of(tenant_id: str | None) -> str:
    return tenant_id or HUB_CHAIN


def canonical_record(
    *,
    chain: str,
    seq: int,
    tenant_id: str | None,
    at: datetime,
    actor: str,
    action: str,
    subject: str | None,
    details: dict[str, Any],
    prev_hash: str,
) -> dict[str, Any]:
    """Return the fields an entry's hash covers, as JSON-ready values."""
    return {
        "chain": chain,
        "seq": seq,
        "tenant_id": tenant_id,
        "at": as_utc(at).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
        "prev_hash": prev_hash,
    }


def hash_record(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON encoding of `record` without its `hash` field."""
    body = {key: value for key, value in record.items() if key != "hash"}
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def entry_record(entry: AuditEntry) -> dict[str, Any]:
    """Return an entry as exported: the hashed fields plus `hash`."""
    record = canonical_record(
        chain=entry.chain,
        seq=entry.seq,
        tenant_id=entry.tenant_id,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        subject=entry.subject,
        details=entry.details or {},
        prev_hash=entry.prev_hash,
    )
    record["hash"] = entry.hash
    return record


def _check_details(details: dict[str, Any]) -> None:
    """Raise ValueError unless `details` holds only short scalars or lists of them (ids)."""
    for key, value in details.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, _SCALARS):
                raise ValueError(f"audit detail {key!r} must be a scalar or a list of scalars")
            if isinstance(item, str) and len(item) > _MAX_DETAIL_STRING:
                raise ValueError(
                    f"audit detail {key!r} is longer than {_MAX_DETAIL_STRING} characters; "
                    "details hold ids and counts only"
                )


def _subject_key(session: Session, tenant_id: str | None) -> bytes:
    """Return the HMAC key for subjects: the tenant's audit key, or the hub-wide key.

    A tenant whose keys were shredded falls back to the hub-wide key.
    """
    if tenant_id is not None:
        try:
            ring = Keyring.load(session, tenant_id)
            return ring.key(KIND_AUDIT, ring.primary_version(KIND_AUDIT))
        except NotFound:
            pass
    return get_key_provider().derive("audit-subject")


def subject_hmac(session: Session, tenant_id: str | None, subject: str) -> str:
    """Return the per-tenant HMAC (hex) that replaces `subject` in audit entries."""
    key = _subject_key(session, tenant_id)
    return hmac.new(
        key, length_prefixed("hub-audit-subject-v1", subject), hashlib.sha256
    ).hexdigest()


def chain_head(session: Session, chain: str) -> tuple[int, str]:
    """Return (seq, hash) of the newest entry of `chain`, or (0, GENESIS_HASH) when empty."""
    row = session.execute(
        select(AuditEntry.seq, AuditEntry.hash)
        .where(AuditEntry.chain == chain)
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return 0, GENESIS_HASH
    return int(row[0]), row[1]


def lock_chains(session: Session, *tenant_ids: str | None) -> None:
    """Take the append locks of several chains in one fixed order, for a transaction that
    writes to all of them, so two such transactions cannot deadlock."""
    for chain in sorted({chain_of(tenant_id) for tenant_id in tenant_ids}):
        advisory_xact_lock(session, _ADVISORY_LOCK_CLASS, chain)


def audit(
    session: Session,
    *,
    tenant_id: str | None,
    actor: str,
    action: str,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an entry to the tenant's chain (or the hub chain when `tenant_id` is None).

    `subject` is an identifier such as `service_requests:7KQ2MX9P4A`; only its HMAC is stored.
    `details` contains ids and counts only, never personal data. The entry commits with the
    caller's transaction, so an action and its evidence are stored together or not at all.
    """
    details = dict(details or {})
    _check_details(details)
    chain = chain_of(tenant_id)
    subject_digest = subject_hmac(session, tenant_id, subject) if subject is not None else None

    advisory_xact_lock(session, _ADVISORY_LOCK_CLASS, chain)
    seq, prev_hash = chain_head(session, chain)
    seq += 1
    fields = {
        "chain": chain,
        "seq": seq,
        "tenant_id": tenant_id,
        "at": utcnow(),
        "actor": actor,
        "action": action,
        "subject": subject_digest,
        "details": details,
        "prev_hash": prev_hash,
    }
    entry = AuditEntry(**fields, hash=hash_record(canonical_record(**fields)))
    session.add(entry)
    session.flush()
    AUDIT_ENTRIES.labels(action=action).inc()

    if seq % CHECKPOINT_EVERY == 0:
        sign_checkpoint(session, chain, seq, entry.hash)
    return entry


def signing_key() -> Ed25519PrivateKey:
    """Derive the hub's Ed25519 checkpoint signing key from the root key."""
    return Ed25519PrivateKey.from_private_bytes(get_key_provider().derive("audit-checkpoint"))


def public_key_hex(private_key: Ed25519PrivateKey | None = None) -> str:
    private_key = private_key or signing_key()
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw.hex()


def checkpoint_message(chain: str, seq: int, head_hash: str) -> bytes:
    return length_prefixed("hub-audit-checkpoint-v1", chain, seq, head_hash)


def anchor_message(chain: str, seq: int, anchor_hash: str, cutoff: str) -> bytes:
    """Return the bytes an anchor signs. Its own domain keeps a checkpoint signature over the
    same (chain, seq, hash) from passing as an anchor."""
    return length_prefixed("hub-audit-anchor-v1", chain, seq, anchor_hash, cutoff)


def anchor_cutoff_text(cutoff: datetime) -> str:
    """Return the cutoff as an anchor signs and exports it: UTC ISO 8601 with microseconds."""
    return as_utc(cutoff).isoformat(timespec="microseconds")


def sign_anchor(
    session: Session, chain: str, seq: int, anchor_hash: str, cutoff: datetime
) -> AuditAnchor:
    """Sign entry `seq` (with hash `anchor_hash`) as the new start of `chain` and store it as
    the chain's anchor, replacing the previous one. The caller deletes the entries up to `seq`
    in the same transaction."""
    key = signing_key()
    message = anchor_message(chain, seq, anchor_hash, anchor_cutoff_text(cutoff))
    anchor = session.get(AuditAnchor, chain)
    if anchor is None:
        anchor = AuditAnchor(chain=chain)
        session.add(anchor)
    anchor.seq = seq
    anchor.hash = anchor_hash
    anchor.cutoff = as_utc(cutoff)
    anchor.signed_at = utcnow()
    anchor.public_key = public_key_hex(key)
    anchor.signature = key.sign(message).hex()
    session.flush()
    log.info("audit_anchor_signed", chain=chain, seq=seq)
    return anchor


def sign_checkpoint(session: Session, chain: str, seq: int, head_hash: str) -> AuditCheckpoint:
    key = signing_key()
    checkpoint = AuditCheckpoint(
        chain=chain,
        seq=seq,
        hash=head_hash,
        signed_at=utcnow(),
        public_key=public_key_hex(key),
        signature=key.sign(checkpoint_message(chain, seq, head_hash)).hex(),
    )
    session.add(checkpoint)
    _raise_head(session, checkpoint)
    session.flush()
    log.info("audit_checkpoint_signed", chain=chain, seq=seq)
    return checkpoint


def _raise_head(session: Session, checkpoint: AuditCheckpoint) -> None:
    """Record `checkpoint` as its chain's highest signed head unless a higher one is recorded."""
    head = session.get(AuditHead, checkpoint.chain)
    if head is None:
        head = AuditHead(chain=checkpoint.chain, seq=0)
        session.add(head)
    if checkpoint.seq <= head.seq:
        return
    head.seq = checkpoint.seq
    head.hash = checkpoint.hash
    head.signed_at = checkpoint.signed_at
    head.public_key = checkpoint.public_key
    head.signature = checkpoint.signature


def checkpoint_chain(session: Session, chain: str) -> AuditCheckpoint | None:
    """Sign the current head of `chain` unless it is empty or already signed."""
    advisory_xact_lock(session, _ADVISORY_LOCK_CLASS, chain)
    seq, head_hash = chain_head(session, chain)
    if seq == 0:
        return None
    existing = session.scalar(
        select(AuditCheckpoint).where(AuditCheckpoint.chain == chain, AuditCheckpoint.seq == seq)
    )
    if existing is not None:
        return existing
    return sign_checkpoint(session, chain, seq, head_hash)
