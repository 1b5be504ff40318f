"""DEK, KEK and root rotation: every version decrypts, re-encryption resumes, old keys retire."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.models import ServiceRequest, StatusEvent
from privacy.fields import ciphertext_version, decrypt_value
from privacy.keys import forget_key_provider
from privacy.models import KIND_DEK, KIND_KEK, TenantKey
from privacy.rotation import (
    list_keys,
    reencrypt_tenant,
    remaining_rows,
    rotate_dek,
    rotate_kek,
    rotate_root,
    rows_per_version,
)


def moved(done):
    """Tables with rows re-encrypted; other registered tables report 0."""
    return {name: count for name, count in done.items() if count}


def versions(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return rows_per_version(session, tenant)


def dek(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return rotate_dek(session, tenant, actor="test")


def all_plaintexts(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        out = {}
        for row in session.scalars(select(ServiceRequest)):
            out[row.id] = (
                decrypt_value(
                    session, tenant, "service_requests", "email_enc", row.id, row.email_enc
                ),
                ciphertext_version(row.email_enc),
            )
        for event in session.scalars(select(StatusEvent)):
            note = decrypt_value(
                session, tenant, "status_events", "note_enc", str(event.id), event.note_enc
            )
            out[f"event{event.id}"] = (note, ciphertext_version(event.note_enc))
        return out


def test_new_dek_is_primary_at_once(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 3)
    assert dek(engine, tenant) == 2
    assert versions(engine, tenant) == {1: 6}
    seed_requests(engine, tenant, 1, start=3)
    assert versions(engine, tenant) == {1: 6, 2: 2}


def test_reencryption_moves_every_row(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 5)
    before = {k: v[0] for k, v in all_plaintexts(engine, tenant).items()}
    dek(engine, tenant)
    done = reencrypt_tenant(tenant, engine=engine, batch_size=2)
    assert moved(done) == {"service_requests": 5, "status_events": 5}
    after = all_plaintexts(engine, tenant)
    assert {k: v[0] for k, v in after.items()} == before
    assert {v[1] for v in after.values()} == {2}
    assert versions(engine, tenant) == {2: 10}


def test_reencryption_twice_changes_nothing(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 2)
    dek(engine, tenant)
    reencrypt_tenant(tenant, engine=engine)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        first = {r.id: r.email_enc for r in session.scalars(select(ServiceRequest))}
    assert moved(reencrypt_tenant(tenant, engine=engine)) == {}
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        second = {r.id: r.email_enc for r in session.scalars(select(ServiceRequest))}
    assert first == second


def test_reencryption_resumes_after_kill(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 6)
    dek(engine, tenant)
    batches = []

    def die_after_two_batches(count):
        batches.append(count)
        if len(batches) == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        reencrypt_tenant(tenant, engine=engine, batch_size=2, progress=die_after_two_batches)
    assert versions(engine, tenant) == {1: 8, 2: 4}
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert remaining_rows(session, tenant) == 8
    done = reencrypt_tenant(tenant, engine=engine, batch_size=2)
    assert moved(done) == {"service_requests": 2, "status_events": 6}
    assert versions(engine, tenant) == {2: 12}


def test_old_dek_retires_at_zero_rows(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 2)
    dek(engine, tenant)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        listing = {i["version"]: i for i in list_keys(session, tenant) if i["kind"] == KIND_DEK}
    assert listing[1]["rows"] == 4
    assert listing[1]["retired_at"] is None
    assert listing[2]["primary"] is True
    reencrypt_tenant(tenant, engine=engine)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        listing = {i["version"]: i for i in list_keys(session, tenant) if i["kind"] == KIND_DEK}
    assert listing[1]["rows"] == 0
    assert listing[1]["retired_at"] is not None
    assert listing[2]["rows"] == 4


def test_kek_rotation_rewraps_only(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 2)
    before = all_plaintexts(engine, tenant)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        old = {(k.kind, k.version): k.wrapped for k in session.scalars(select(TenantKey))}
        assert rotate_kek(session, tenant, actor="test") == 2
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        new = {(k.kind, k.version): k for k in session.scalars(select(TenantKey))}
    assert (KIND_KEK, 1) not in new
    assert new[(KIND_KEK, 2)].wrapped != old[(KIND_KEK, 1)]
    assert new[(KIND_DEK, 1)].wrapped_by == "2"
    assert new[(KIND_DEK, 1)].wrapped != old[(KIND_DEK, 1)]
    assert all_plaintexts(engine, tenant) == before


def test_root_rotation_rewraps_keks(engine, tenant, seed_requests):
    from hub.core.settings import get_settings

    seed_requests(engine, tenant, 2)
    before = all_plaintexts(engine, tenant)
    result = rotate_root(engine=engine, actor="test")
    assert result["old_root_key_id"] != result["new_root_key_id"]
    forget_key_provider()
    assert all_plaintexts(engine, tenant) == before
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        kek = session.scalar(
            select(TenantKey).where(TenantKey.tenant_id == tenant, TenantKey.kind == KIND_KEK)
        )
    assert kek.wrapped_by == result["new_root_key_id"]
    key_file = get_settings().effective_root_key_file
    previous = key_file.parent / f"{key_file.name}.{result['old_root_key_id']}.previous"
    assert result["previous_key_file"] == str(previous)
    assert previous.exists()
