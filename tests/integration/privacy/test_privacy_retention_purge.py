"""The retention purge: a purged request links to no one, and old requests are deleted."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

import privacy.retention
from hub.core.db import unit_of_work
from hub.core.tenancy import TenantContext
from hub.requests.geo import storage_cell
from hub.requests.models import (
    Delivery,
    IdempotencyRecord,
    RequestToken,
    ServiceRequest,
    StatusEvent,
)
from hub.requests.queries import find_by_contact
from privacy.blind_index import blind_index
from privacy.models import AuditEntry
from privacy.report import build_report
from privacy.retention import purge_in_batches, tenant_privacy_settings
from privacy.shred import crypto_shred
from privacy.tasks import run_retention_purge

EMAIL = "resident{n}@example.org"
PHONE = "+12025550123"
# More than the default `requests` period (2555 days) before today.
LONG_AGO = datetime(2015, 1, 1, tzinfo=UTC)


def index_contacts(engine, tenant, ids):
    """Give the seeded requests the blind indexes, cell and district that intake stores."""
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        for n, request_id in enumerate(ids):
            email, version = blind_index(session, tenant, "email", EMAIL.format(n=n))
            phone, _ = blind_index(session, tenant, "phone", PHONE)
            session.execute(
                update(ServiceRequest)
                .where(ServiceRequest.id == request_id)
                .values(
                    email_bidx=email,
                    phone_bidx=phone,
                    device_id_bidx="d" * 32,
                    bidx_version=version,
                    h3_cell=storage_cell(42.3601, -71.0589),
                    district="back-bay",
                    zipcode="02116",
                )
            )
            session.add(
                IdempotencyRecord(
                    tenant_id=tenant,
                    api_key_id=1,
                    key=f"key-{request_id}",
                    request_hash="h" * 64,
                    request_id=request_id,
                    response={"service_request_id": request_id},
                )
            )
            session.add(
                RequestToken(tenant_id=tenant, token=f"tok-{request_id}", request_id=request_id)
            )
            session.add(Delivery(tenant_id=tenant, request_id=request_id, destination="roads"))


def close_at(engine, tenant, request_id, closed_at):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == request_id)
            .values(status="closed", closed_at=closed_at)
        )


def found_by_contact(engine, tenant, n):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        ctx = TenantContext(tenant)
        by_email = find_by_contact(session, ctx, email=EMAIL.format(n=n))
        by_phone = find_by_contact(session, ctx, phone=PHONE)
        return {row.id for row in by_email}, {row.id for row in by_phone}


def count(engine, tenant, model, request_id):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return session.scalar(
            select(func.count()).select_from(model).where(model.request_id == request_id)
        )


def retention_control(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        result = build_report(session, tenant)
    return next(c for c in result["controls"] if c["id"] == "retention")


def test_purged_request_not_found_by_contact(engine, tenant, seed_requests, close_expired):
    ids = seed_requests(engine, tenant, 2)
    index_contacts(engine, tenant, ids)
    close_expired(engine, tenant, ids[0])
    assert found_by_contact(engine, tenant, 0) == ({ids[0]}, set(ids))

    assert run_retention_purge(tenant, engine=engine)["service_requests"] == 1

    assert found_by_contact(engine, tenant, 0) == (set(), {ids[1]})
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        purged = session.get(ServiceRequest, ids[0])
        kept = session.get(ServiceRequest, ids[1])
        assert (purged.email_bidx, purged.phone_bidx, purged.device_id_bidx) == (None,) * 3
        assert (purged.bidx_version, purged.h3_cell) == (None, None)
        # What open data and statistics keep: service, status, dates, the public location.
        assert (purged.service_code, purged.status) == ("pothole", "closed")
        assert purged.requested_at is not None and purged.closed_at is not None
        assert (purged.lat, purged.lon, purged.district) == (42.3601, -71.0589, "back-bay")
        assert kept.email_bidx is not None and kept.h3_cell is not None
    # The idempotency record keeps a hash of the body that held the personal data.
    assert count(engine, tenant, IdempotencyRecord, ids[0]) == 0
    assert count(engine, tenant, IdempotencyRecord, ids[1]) == 1
    assert count(engine, tenant, RequestToken, ids[0]) == 1
    assert retention_control(engine, tenant)["passed"]


def test_report_fails_on_leftover_blind_index(engine, tenant, seed_requests, close_expired):
    """A row the purge once emptied of ciphertexts only still links to the resident."""
    ids = seed_requests(engine, tenant, 1)
    index_contacts(engine, tenant, ids)
    close_expired(engine, tenant, ids[0])
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == ids[0])
            .values(
                description_enc=None,
                email_enc=None,
                phone_enc=None,
                first_name_enc=None,
                dek_version=None,
            )
        )
    retention = retention_control(engine, tenant)
    assert not retention["passed"]
    assert retention["evidence"]["rows_past_retention"]["service_requests"] == 1

    assert run_retention_purge(tenant, engine=engine)["service_requests"] == 1
    assert retention_control(engine, tenant)["passed"]
    assert found_by_contact(engine, tenant, 0) == (set(), set())


def test_requests_period_deletes_request(engine, tenant, seed_requests):
    ids = seed_requests(engine, tenant, 2)
    index_contacts(engine, tenant, ids)
    close_at(engine, tenant, ids[0], LONG_AGO)
    retention = retention_control(engine, tenant)
    assert not retention["passed"]
    assert retention["evidence"]["rows_past_deletion"] == {"service_requests": 1}

    purged = run_retention_purge(tenant, engine=engine)

    assert purged["deleted:service_requests"] == 1
    assert purged["deleted:status_events"] == 1
    assert purged["deleted:deliveries"] == 1
    assert purged["deleted:request_tokens"] == 1
    assert purged["deleted:idempotency_keys"] == 1
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert session.get(ServiceRequest, ids[0]) is None
        assert session.get(ServiceRequest, ids[1]) is not None
        entry = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == tenant, AuditEntry.action == "retention.purge")
            .order_by(AuditEntry.seq.desc())
        ).first()
    assert entry.details["rows_deleted"] == 5
    assert "service_requests:1" in entry.details["deleted"]
    for model in (StatusEvent, Delivery, RequestToken, IdempotencyRecord):
        assert count(engine, tenant, model, ids[0]) == 0
        assert count(engine, tenant, model, ids[1]) == 1
    assert retention_control(engine, tenant)["passed"]
    assert run_retention_purge(tenant, engine=engine).get("deleted:service_requests") is None


def test_purge_commits_batch_by_batch(engine, tenant, seed_requests, monkeypatch):
    ids = seed_requests(engine, tenant, 5)
    for request_id in ids[:3]:
        close_at(engine, tenant, request_id, LONG_AGO)
    for request_id in ids[3:]:
        close_at(engine, tenant, request_id, datetime(2020, 1, 1, tzinfo=UTC))
    monkeypatch.setattr(privacy.retention, "PURGE_BATCH", 2)
    transactions = []

    @contextmanager
    def transaction():
        transactions.append(1)
        with unit_of_work(TenantContext(tenant), engine=engine) as session:
            yield session

    with unit_of_work(TenantContext(tenant), engine=engine, write=False) as session:
        days = tenant_privacy_settings(session, tenant)["retention_days"]
    purged = purge_in_batches(transaction, tenant, days, actor="test")

    assert purged["deleted:service_requests"] == 3
    assert purged["service_requests"] == 2
    # Batches of two: deletions 2 and 1, then the 2 clearings, then the empty last one, then
    # the audit purge that finds no entry past the `audit` period.
    assert len(transactions) == 5
    assert retention_control(engine, tenant)["passed"]


def test_interrupted_purge_audits_committed_batches(engine, tenant, seed_requests, monkeypatch):
    ids = seed_requests(engine, tenant, 3)
    for request_id in ids:
        close_at(engine, tenant, request_id, LONG_AGO)
    monkeypatch.setattr(privacy.retention, "PURGE_BATCH", 2)
    calls = []

    @contextmanager
    def transaction():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("worker stopped")
        with unit_of_work(TenantContext(tenant), engine=engine) as session:
            yield session

    with unit_of_work(TenantContext(tenant), engine=engine, write=False) as session:
        days = tenant_privacy_settings(session, tenant)["retention_days"]
    with pytest.raises(RuntimeError):
        purge_in_batches(transaction, tenant, days, actor="test")

    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        left = session.scalar(select(func.count()).select_from(ServiceRequest))
        entries = session.scalars(
            select(AuditEntry).where(
                AuditEntry.tenant_id == tenant, AuditEntry.action == "retention.purge"
            )
        ).all()
    # The first batch deleted two requests and committed, so its audit entry is there.
    assert left == 1
    [entry] = entries
    assert "service_requests:2" in entry.details["deleted"]


def test_report_of_shredded_tenant(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 1)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        destroyed = crypto_shred(session, tenant, actor="cli:operator")
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        result = build_report(session, tenant)
    assert result["passed"]
    assert [c["id"] for c in result["controls"]] == ["crypto_shred", "audit_chain"]
    evidence = result["controls"][0]["evidence"]
    assert evidence["keys_destroyed"] == destroyed > 0
    assert evidence["key_rows_remaining"] == 0
    assert evidence["shredded_at"].startswith(str(datetime.now(UTC).year))
    assert result["controls"][1]["passed"]


def test_report_without_keys_fails(engine, tenant):
    from privacy.models import TenantKey

    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        session.execute(TenantKey.__table__.delete().where(TenantKey.tenant_id == tenant))
    with (
        unit_of_work(TenantContext(tenant), engine=engine) as session,
        pytest.raises(Exception, match="no encryption keys"),
    ):
        build_report(session, tenant)
