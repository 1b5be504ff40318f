"""Crypto-shredding leaves none of a tenant's data decryptable and the others untouched."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from lock_support import ADVISORY_WAITERS
from sqlalchemy import select

from hub.core.db import unit_of_work
from hub.core.errors import InvalidInput, NotFound
from hub.core.tenancy import TenantContext
from hub.requests.models import ServiceRequest
from privacy.access import decrypt_fields
from privacy.models import AuditEntry
from privacy.shred import crypto_shred, open_sealed, seal


def first_request(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return session.scalars(select(ServiceRequest)).first()


def read_email(engine, ctx, row):
    with unit_of_work(ctx, engine=engine) as session:
        return decrypt_fields(
            session,
            ctx,
            "service_requests",
            row.id,
            {"email_enc": row.email_enc},
            purpose="staff.request_view",
        )["email_enc"]


def test_shredded_tenant_cannot_decrypt(engine, tenant, other_tenant, seed_requests):
    seed_requests(engine, tenant, 2)
    seed_requests(engine, other_tenant, 2)
    mine, theirs = first_request(engine, tenant), first_request(engine, other_tenant)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert crypto_shred(session, tenant, actor="test") == 4
    staff = TenantContext(tenant, actor="apikey:1", roles=frozenset({"staff"}))
    with pytest.raises(NotFound):
        read_email(engine, staff, mine)
    other_staff = TenantContext(other_tenant, actor="apikey:3", roles=frozenset({"staff"}))
    assert read_email(engine, other_staff, theirs).endswith("@example.org")


def test_shredding_is_audited(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        crypto_shred(session, tenant, actor="cli:operator")
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        entry = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.chain == tenant)
            .order_by(AuditEntry.seq.desc())
            .limit(1)
        ).one()
    assert entry.action == "keys.crypto_shred"
    assert entry.details["keys_destroyed"] == 4


def test_seal_round_trip():
    private = X25519PrivateKey.generate()
    blob = seal(private.public_key(), b"tenant records")
    assert b"tenant records" not in blob
    assert open_sealed(private, blob) == b"tenant records"


def test_seal_wrong_key_fails():
    blob = seal(X25519PrivateKey.generate().public_key(), b"tenant records")
    with pytest.raises(InvalidInput, match="failed authentication"):
        open_sealed(X25519PrivateKey.generate(), blob)


def test_offboarding_closes_intake_before_export(engine, tenant, seed_requests, tmp_path):
    """Requests accepted while the export runs would miss the export and then lose their keys,
    so a shredding offboard stops accepting them before it exports."""
    from tenants.keys import create_api_key, forget_cached_keys, resolve_api_key
    from tenants.offboarding import offboard
    from tenants.registry import get_tenant, invalidate_cache

    seed_requests(engine, tenant, 1)
    ctx = TenantContext(tenant, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        _row, api_key = create_api_key(session, ctx, roles=["open311"], label="city app")
    recipient = X25519PrivateKey.generate().public_key().public_bytes_raw().hex().encode()
    during_export = []

    def check_intake(_rows):
        forget_cached_keys()
        invalidate_cache()
        key_accepted = resolve_api_key(api_key, engine=engine) is not None
        during_export.append((key_accepted, get_tenant(tenant, engine=engine).active))

    result = offboard(
        tenant,
        export_dir=tmp_path,
        public_key=recipient,
        shred=True,
        actor="test",
        engine=engine,
        progress=check_intake,
    )
    assert result["shredded"] is True
    assert during_export
    assert all(key_accepted is False for key_accepted, _active in during_export)
    assert all(active is False for _key_accepted, active in during_export)


def test_failed_offboarding_export_reopens_intake(engine, tenant, tmp_path):
    from tenants.offboarding import offboard
    from tenants.registry import get_tenant, invalidate_cache

    with pytest.raises(InvalidInput):
        offboard(
            tenant,
            export_dir=tmp_path,
            public_key=b"not a key",
            shred=True,
            actor="test",
            engine=engine,
        )
    invalidate_cache()
    assert get_tenant(tenant, engine=engine).active is True


def test_shred_during_dek_rotation_leaves_no_key(engine, tenant):
    """A shredding that starts while a DEK rotation is uncommitted also destroys the new DEK."""
    import threading
    import time

    from sqlalchemy import func, text

    from privacy.models import TenantKey
    from privacy.rotation import rotate_dek

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time, so the two cannot overlap")
    errors = []

    def shred_in_thread():
        try:
            with unit_of_work(TenantContext(tenant), engine=engine) as session:
                crypto_shred(session, tenant, actor="test")
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    waiting_query = text(ADVISORY_WAITERS)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        rotate_dek(session, tenant, actor="test")
        shred_thread = threading.Thread(target=shred_in_thread)
        shred_thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(waiting_query).scalar():
                    break
            time.sleep(0.05)
    shred_thread.join(timeout=30)
    assert not shred_thread.is_alive()
    assert errors == []

    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        remaining = session.scalar(
            select(func.count()).select_from(TenantKey).where(TenantKey.tenant_id == tenant)
        )
    assert remaining == 0


def test_interrupted_offboarding_export_reopens_intake(engine, tenant, seed_requests, tmp_path):
    """An export stopped with Ctrl-C destroyed nothing, so the tenant takes requests again;
    no command other than a shredding offboard would reopen it."""
    from tenants.offboarding import offboard
    from tenants.registry import get_tenant, invalidate_cache

    seed_requests(engine, tenant, 1)
    recipient = X25519PrivateKey.generate().public_key().public_bytes_raw().hex().encode()

    def interrupt(_rows):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        offboard(
            tenant,
            export_dir=tmp_path,
            public_key=recipient,
            shred=True,
            actor="test",
            engine=engine,
            progress=interrupt,
        )
    invalidate_cache()
    assert get_tenant(tenant, engine=engine).active is True


def test_offboarding_intake_changes_audited(engine, tenant, tmp_path):
    """Closing a city's intake for an offboarding, and reopening it after a failed export,
    are on the tenant's audit chain, with who did it."""
    from tenants.offboarding import offboard

    with pytest.raises(InvalidInput):
        offboard(
            tenant,
            export_dir=tmp_path,
            public_key=b"not a key",
            shred=True,
            actor="cli:dana",
            engine=engine,
        )

    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        entries = session.execute(
            select(AuditEntry.action, AuditEntry.actor)
            .where(AuditEntry.chain == tenant, AuditEntry.action.like("tenant.intake_%"))
            .order_by(AuditEntry.seq)
        ).all()
    assert [tuple(entry) for entry in entries] == [
        ("tenant.intake_closed", "cli:dana"),
        ("tenant.intake_reopened", "cli:dana"),
    ]
