"""Two POSTs with one Idempotency-Key at the same moment store one request (PostgreSQL)."""

from __future__ import annotations

import threading
import uuid

import pytest
from open311_support import INSIDE, onboard_tenant
from sqlalchemy import func, select

from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from hub.open311.intake import write_batch
from hub.requests.models import ServiceRequest
from hub.requests.schemas import IntakeData, IntakeJob
from tenants.keys import resolve_api_key
from tenants.registry import get_tenant

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_hub(pg_url, monkeypatch):
    from hub.core.db import dispose_engines
    from hub.core.settings import reset_settings_cache

    monkeypatch.setenv("HUB_DATABASE_URL", pg_url)
    reset_settings_cache()
    dispose_engines()
    yield pg_url
    monkeypatch.undo()
    reset_settings_cache()
    dispose_engines()


def _same_key_job(engine) -> tuple[str, object, IntakeJob]:
    """Return a new tenant's id, its snapshot and a POST with a fixed Idempotency-Key."""
    keys = onboard_tenant(engine, f"race-{uuid.uuid4().hex[:8]}", region=None)
    tenant = get_tenant(keys.id, engine=engine)
    key_id = resolve_api_key(keys.open311, engine=engine).key_id
    ctx = TenantContext(keys.id, actor=f"apikey:{key_id}")
    data = IntakeData(
        service_code="pothole",
        lat=INSIDE[0],
        lon=INSIDE[1],
        attributes={"depth": "5"},
        api_key_id=key_id,
    )
    job = IntakeJob(ctx=ctx, data=data, idempotency_key="race-key", request_hash="same-hash")
    return keys.id, tenant, job


def _stored_requests(engine, tenant_id: str) -> int:
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        return session.scalar(
            select(func.count())
            .select_from(ServiceRequest)
            .where(ServiceRequest.tenant_id == tenant_id)
        )


def test_concurrent_same_key_stores_one_request(pg_hub):
    engine = get_engine(pg_hub)
    tenant_id, tenant, job = _same_key_job(engine)
    barrier = threading.Barrier(4)
    results, errors = [], []

    def post() -> None:
        barrier.wait()
        try:
            [outcome] = write_batch(tenant, [job])
            if isinstance(outcome, Exception):
                raise outcome
            results.append(outcome)
        except Exception as exc:  # noqa: BLE001 - the assert below reports it
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len({result.service_request_id for result in results}) == 1
    assert _stored_requests(engine, tenant_id) == 1


def test_same_key_twice_in_one_batch(pg_hub):
    """The batch's transaction fails on the second idempotency record, and each call then
    runs alone: the first stores the request and the second gets its result."""
    engine = get_engine(pg_hub)
    tenant_id, tenant, job = _same_key_job(engine)
    first, second = write_batch(tenant, [job, job])
    assert first.service_request_id == second.service_request_id
    assert first.replayed is False
    assert second.replayed is True
    assert _stored_requests(engine, tenant_id) == 1
