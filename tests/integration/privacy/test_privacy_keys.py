"""Tenant keys are created once, wrapped, and bound to their tenant and version."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from privacy.keys import Keyring, KeyUnwrapFailed, clear_key_cache, create_tenant_keys
from privacy.models import KEY_KINDS, KIND_DEK, KIND_KEK, TenantKey


def key_rows(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return session.scalars(select(TenantKey).order_by(TenantKey.kind)).all()


def test_onboarding_creates_each_kind_once(engine, tenant):
    rows = key_rows(engine, tenant)
    assert sorted(row.kind for row in rows) == sorted(KEY_KINDS)
    assert all(row.version == 1 for row in rows)


def test_create_is_idempotent(engine, tenant):
    before = {(row.kind, row.wrapped) for row in key_rows(engine, tenant)}
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        create_tenant_keys(session, tenant)
    after = {(row.kind, row.wrapped) for row in key_rows(engine, tenant)}
    assert after == before


def test_wrapped_key_is_not_the_key(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        ring = Keyring.load(session, tenant)
        dek = ring.key(KIND_DEK, 1)
        wrapped = ring.rows[(KIND_DEK, 1)].wrapped
    assert len(dek) == 32
    assert dek not in wrapped


def test_wrapped_dek_moved_to_other_tenant_fails(engine, tenant, other_tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        mine = Keyring.load(session, tenant).rows[(KIND_DEK, 1)].wrapped
    with unit_of_work(SystemContext("test tamper"), engine=engine) as session:
        row = session.scalar(
            select(TenantKey).where(TenantKey.tenant_id == other_tenant, TenantKey.kind == KIND_DEK)
        )
        row.wrapped = mine
    clear_key_cache()
    with unit_of_work(TenantContext(other_tenant), engine=engine) as session:
        ring = Keyring.load(session, other_tenant)
        with pytest.raises(KeyUnwrapFailed):
            ring.key(KIND_DEK, 1)


def test_tampered_kek_fails(engine, tenant):
    with unit_of_work(SystemContext("test tamper"), engine=engine) as session:
        row = session.scalar(
            select(TenantKey).where(TenantKey.tenant_id == tenant, TenantKey.kind == KIND_KEK)
        )
        tampered = bytearray(row.wrapped)
        tampered[-1] ^= 0x01
        row.wrapped = bytes(tampered)
    clear_key_cache()
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        with pytest.raises(KeyUnwrapFailed):
            Keyring.load(session, tenant).key(KIND_DEK, 1)
