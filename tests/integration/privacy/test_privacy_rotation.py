"""DEK, KEK and root rotation: every version decrypts, re-encryption resumes, old keys retire."""

from __future__ import annotations

import os
import secrets

import pytest
from lock_support import ADVISORY_WAITERS
from sqlalchemy import select

from hub.core.db import unit_of_work
from hub.core.settings import get_settings
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.models import ServiceRequest, StatusEvent
from privacy.audit import public_key_hex
from privacy.fields import ciphertext_version, decrypt_value
from privacy.keys import KEY_BYTES, forget_key_provider, get_key_provider, write_root_key
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


# Purposes whose derived secrets outlive a root rotation: residents' Web Push subscriptions,
# alert webhook receivers, unsubscribe links and auditors rely on them.
DERIVED = ("audit-checkpoint", "audit-subject", "alerts.webhook:t1", "alerts.vapid:t1")


def derived(provider):
    return {purpose: provider.derive(purpose) for purpose in DERIVED}


def test_root_rotation_keeps_derived_secrets(engine, tenant):
    before = derived(get_key_provider())
    signer = public_key_hex()

    result = rotate_root(engine=engine, actor="test")
    forget_key_provider()

    assert derived(get_key_provider()) == before
    assert public_key_hex() == signer
    assert result["audit_public_key"] == signer
    assert result["new_derived_keys"] is False


def test_running_provider_follows_rotation(engine, tenant):
    # A provider that a running API process loaded before another process rotated the key.
    running = get_key_provider()
    before = derived(running)

    result = rotate_root(engine=engine, actor="test")

    key_id, blob = running.wrap(b"k" * 32, b"aad")
    assert key_id == result["new_root_key_id"]
    forget_key_provider()
    assert get_key_provider().unwrap(blob, b"aad", key_id=key_id) == b"k" * 32
    assert derived(running) == before


def test_new_derived_keys_replace_them(engine, tenant):
    running = get_key_provider()
    before = derived(running)

    result = rotate_root(engine=engine, actor="test", new_derived_keys=True)
    forget_key_provider()
    replaced = derived(get_key_provider())

    assert all(replaced[purpose] != before[purpose] for purpose in DERIVED)
    assert derived(running) == replaced
    assert result["audit_public_key"] == public_key_hex()
    rotate_root(engine=engine, actor="test")
    forget_key_provider()
    assert derived(get_key_provider()) == replaced


def test_derived_secrets_survive_interrupted_rotation():
    # The first steps of `rotate_root`: store the derivation key under the old key, move the old
    # key file aside and write the new one. The process stops before it re-wraps the key.
    settings = get_settings()
    path = settings.effective_root_key_file
    old = get_key_provider()
    before = derived(old)
    old.store_derivation_key(old.derivation_key)
    os.replace(path, path.with_name(f"{path.name}.{old.key_id}.previous"))
    write_root_key(path, secrets.token_bytes(KEY_BYTES))
    forget_key_provider()

    assert derived(get_key_provider()) == before


def _wait_for_advisory_lock_waiter(engine, timeout=10.0):
    """Wait until some session waits for an advisory lock; fail after `timeout` seconds."""
    import time

    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(text(ADVISORY_WAITERS)).scalar()
        if waiting:
            return
        time.sleep(0.05)
    pytest.fail("the KEK rotation never waited for the DEK rotation's transaction")


def test_kek_rotation_during_dek_rotation(engine, tenant, seed_requests):
    """A KEK rotation that starts while a DEK rotation is uncommitted re-wraps the new DEK too,
    so no data key is left wrapped by a deleted KEK."""
    import threading

    from privacy.keys import Keyring

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time, so the two cannot overlap")
    seed_requests(engine, tenant, 1)
    errors = []

    def rotate_kek_in_thread():
        try:
            with unit_of_work(TenantContext(tenant), engine=engine) as session:
                rotate_kek(session, tenant, actor="test")
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert rotate_dek(session, tenant, actor="test") == 2
        kek_thread = threading.Thread(target=rotate_kek_in_thread)
        kek_thread.start()
        _wait_for_advisory_lock_waiter(engine)
    kek_thread.join(timeout=30)
    assert not kek_thread.is_alive()
    assert errors == []

    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        ring = Keyring.load(session, tenant)
        assert ring.versions(KIND_KEK) == [2]
        assert ring.rows[(KIND_DEK, 2)].wrapped_by == "2"
        assert len(ring.key(KIND_DEK, 2)) == KEY_BYTES


def test_root_rotation_during_kek_rotation(engine, tenant, seed_requests):
    """A root rotation that starts while a tenant's KEK rotation is uncommitted waits for it
    and re-wraps the new KEK, instead of failing on the KEK row that rotation deleted."""
    import threading
    import time

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time, so the two cannot overlap")
    seed_requests(engine, tenant, 1)
    errors, results = [], []

    def rotate_root_in_thread():
        try:
            results.append(rotate_root(engine=engine, actor="test"))
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert rotate_kek(session, tenant, actor="test") == 2
        root_thread = threading.Thread(target=rotate_root_in_thread)
        root_thread.start()
        # The root rotation reads the KEK rows meanwhile, or waits for this transaction.
        time.sleep(1.0)
    root_thread.join(timeout=30)
    forget_key_provider()

    assert not root_thread.is_alive()
    assert errors == []
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        kek = session.scalar(
            select(TenantKey).where(TenantKey.tenant_id == tenant, TenantKey.kind == KIND_KEK)
        )
    assert kek.version == 2
    assert kek.wrapped_by == results[0]["new_root_key_id"]
