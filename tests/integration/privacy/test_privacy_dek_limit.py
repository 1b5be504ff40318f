"""Encryption counts per DEK queue an automatic rotation and stop at the hard limit."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.core.db import unit_of_work
from hub.core.errors import Unavailable
from hub.core.outbox import OutboxMessage
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import TenantContext
from privacy import fields
from privacy.fields import FieldCipher, encryption_count
from privacy.tasks import ROTATE_IF_DUE_TASK, rotate_dek_if_due


@pytest.fixture
def low_limits(monkeypatch):
    monkeypatch.setattr(fields, "USAGE_RECORD_EVERY", 1)
    monkeypatch.setattr(fields, "ROTATE_AFTER", 5)
    monkeypatch.setattr("privacy.tasks.ROTATE_AFTER", 5)


def encrypt_many(engine, tenant, count):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        cipher = FieldCipher.for_tenant(session, tenant)
        for n in range(count):
            cipher.encrypt("service_requests", "email_enc", f"R{n}", "a@example.org")
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        FieldCipher.for_tenant(session, tenant)  # records the counts


def test_counts_recorded_per_version(engine, tenant, low_limits):
    encrypt_many(engine, tenant, 3)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert encryption_count(session, tenant, 1) == 3


def test_rotation_queued_past_limit(engine, tenant, low_limits):
    encrypt_many(engine, tenant, 6)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        queued = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.tenant_id == tenant, OutboxMessage.task == ROTATE_IF_DUE_TASK
            )
        ).all()
    assert len(queued) == 1


def test_rotation_task_rotates_once(engine, db_url, tenant, low_limits, monkeypatch):
    encrypt_many(engine, tenant, 6)
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    reset_settings_cache()
    try:
        assert rotate_dek_if_due(tenant_id=tenant) == 2
        assert rotate_dek_if_due(tenant_id=tenant) is None
    finally:
        reset_settings_cache()
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert FieldCipher.for_tenant(session, tenant).dek_version == 2


def test_hard_limit_refuses(engine, tenant, low_limits, monkeypatch):
    monkeypatch.setattr(fields, "HARD_LIMIT", 4)
    with pytest.raises(Unavailable, match="reached its encryption limit"):
        encrypt_many(engine, tenant, 5)
