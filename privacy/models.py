"""Key material and the audit log.

Every tenant key is stored wrapped (AES-256-GCM): the tenant's KEK under the root key of the
`KeyProvider`, and DEKs, index keys and audit-subject keys under the tenant's KEK. Crypto-shredding
deletes a tenant's rows here, after which its ciphertexts cannot be decrypted by anyone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.clock import utcnow
from hub.core.db import Base
from hub.core.tenancy import TenantOwned

# Kinds of tenant key. The KEK wraps all the others.
KIND_KEK = "kek"
KIND_DEK = "dek"  # field encryption (privacy.fields)
KIND_INDEX = "index"  # blind indexes (privacy.blind_index)
KIND_AUDIT = "audit"  # HMAC of subjects in audit entries (privacy.audit)
KEY_KINDS = (KIND_KEK, KIND_DEK, KIND_INDEX, KIND_AUDIT)


class TenantKey(TenantOwned, Base):
    """One version of one kind of tenant key, wrapped.

    `wrapped_by` names the wrapping key: the root key id for a KEK, the KEK version (as text)
    for the other kinds. The primary version of a kind is the highest one not retired.
    """

    __tablename__ = "privacy_tenant_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    version: Mapped[int] = mapped_column(Integer)
    wrapped_by: Mapped[str] = mapped_column(String(64))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when the key was last re-wrapped (KEK or root rotation).
    rewrapped_at: Mapped[datetime | None] = mapped_column()
    # Set when a DEK version no longer encrypts any stored row. The key is kept until
    # shredding, so a row restored from an older backup still decrypts.
    retired_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "version", name="uq_privacy_keys_version"),
    )


class KeyUsage(TenantOwned, Base):
    """Encryptions made under one DEK version by one process since its previous record.

    Rows are only inserted, never updated, so counting adds no lock on a hot row. A transaction
    that rolls back loses its count, so the sum may undercount.
    """

    __tablename__ = "privacy_key_usage"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    dek_version: Mapped[int] = mapped_column(Integer)
    encryptions: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_privacy_key_usage_tenant_version", "tenant_id", "dek_version"),)


class AuditEntry(Base):
    """One entry of an append-only, hash-chained audit log.

    There is one chain per tenant (`chain` is the tenant id) and one for hub-wide events
    (`chain` is `hub`, `tenant_id` is empty). `hash` is the SHA-256 of the canonical encoding of
    the entry including `prev_hash`, so an edit, deletion, insertion or reordering breaks the
    chain. The table is not tenant-owned: entries outlive their tenant's keys and row.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chain: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64))
    # HMAC-SHA256 (hex) of the subject identifier under the tenant's audit key.
    subject: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("chain", "seq", name="uq_audit_chain_seq"),
        Index("ix_audit_tenant_action_at", "tenant_id", "action", "at"),
    )


class AuditCheckpoint(Base):
    """An Ed25519 signature over the head (`seq`, `hash`) of one audit chain."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("chain", "seq", name="uq_audit_checkpoint_seq"),)


class AuditHead(Base):
    """The highest head of one audit chain that a checkpoint signed: one row per chain.

    Signing a checkpoint raises it and nothing lowers it, so a chain that no longer reaches
    `seq` with `hash` lost entries from its end. The row and its checkpoint are in the same
    database as the entries, so it detects a deletion of the tail that leaves this row alone,
    not one that also rewinds or deletes it.
    """

    __tablename__ = "audit_heads"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)


class AuditAnchor(Base):
    """The signed start of an audit chain whose oldest entries the retention purge deleted.

    The purge deletes entries 1..`seq` and signs (`chain`, `seq`, `hash`, `cutoff`) with the
    checkpoint key under its own domain (`privacy.audit.anchor_message`), so a checkpoint
    signature cannot be reused as an anchor. The chain's first kept entry is `seq` + 1 and
    links to `hash`. Every entry deleted was older than `cutoff`. One row per chain, moved
    forward by each purge.
    """

    __tablename__ = "audit_anchors"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    cutoff: Mapped[datetime] = mapped_column()
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)
