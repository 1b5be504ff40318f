"""The audit chain links every entry to the previous one and stays gap-free under concurrency."""

from __future__ import annotations

import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from privacy.audit import (
    CHECKPOINT_EVERY,
    GENESIS_HASH,
    audit,
    checkpoint_chain,
    checkpoint_message,
    entry_record,
    hash_record,
)
from privacy.models import AuditCheckpoint, AuditEntry


def chain_entries(engine, chain):
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        return session.scalars(
            select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)
        ).all()


def append(engine, tenant, count, action="test.event"):
    for i in range(count):
        with unit_of_work(TenantContext(tenant), engine=engine) as session:
            audit(session, tenant_id=tenant, actor="cli:test", action=action, details={"n": i})


def test_entries_link_to_previous(engine, tenant):
    append(engine, tenant, 3)
    entries = chain_entries(engine, tenant)
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].action == "keys.create"
    assert entries[0].prev_hash == GENESIS_HASH
    for previous, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == previous.hash


def test_stored_hash_matches_record(engine, tenant):
    append(engine, tenant, 2)
    for entry in chain_entries(engine, tenant):
        assert hash_record(entry_record(entry)) == entry.hash


def test_subject_is_hmac_per_tenant(engine, tenant, other_tenant):
    for tenant_id in (tenant, other_tenant):
        with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
            audit(
                session,
                tenant_id=tenant_id,
                actor="cli:test",
                action="test.subject",
                subject="service_requests:R1",
            )
    mine = chain_entries(engine, tenant)[-1].subject
    theirs = chain_entries(engine, other_tenant)[-1].subject
    assert mine != theirs
    assert "R1" not in mine


def test_hub_chain_without_tenant(engine):
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        entry = audit(session, tenant_id=None, actor="cli:operator", action="root.rotate")
    assert entry.chain == "hub"
    assert entry.tenant_id is None


def test_details_must_be_flat(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        with pytest.raises(ValueError, match="scalar"):
            audit(session, tenant_id=tenant, actor="x", action="y", details={"a": {"b": 1}})


def test_long_detail_string_rejected(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        with pytest.raises(ValueError, match="longer than"):
            audit(session, tenant_id=tenant, actor="x", action="y", details={"a": "x" * 500})


def test_rolled_back_entry_leaves_no_gap(engine, tenant):
    with pytest.raises(RuntimeError):
        with unit_of_work(TenantContext(tenant), engine=engine) as session:
            audit(session, tenant_id=tenant, actor="x", action="lost")
            raise RuntimeError("abort")
    append(engine, tenant, 1)
    assert [e.seq for e in chain_entries(engine, tenant)] == [1, 2]


def test_concurrent_appends_stay_contiguous(engine, tenant):
    errors = []

    def worker():
        try:
            append(engine, tenant, 10, action="test.concurrent")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    entries = chain_entries(engine, tenant)
    assert [e.seq for e in entries] == list(range(1, 42))
    for previous, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == previous.hash


def test_checkpoint_signature_verifies(engine, tenant):
    append(engine, tenant, 2)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        checkpoint = checkpoint_chain(session, tenant)
    public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(checkpoint.public_key))
    message = checkpoint_message(tenant, checkpoint.seq, checkpoint.hash)
    public_key.verify(bytes.fromhex(checkpoint.signature), message)
    assert checkpoint.seq == 3


def test_checkpoint_every_interval(engine, tenant):
    append(engine, tenant, CHECKPOINT_EVERY - 1)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        seqs = session.scalars(
            select(AuditCheckpoint.seq).where(AuditCheckpoint.chain == tenant)
        ).all()
    assert seqs == [CHECKPOINT_EVERY]
