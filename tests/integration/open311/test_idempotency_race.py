"""Two POSTs with one Idempotency-Key at the same moment store one request (PostgreSQL)."""

from __future__ import annotations

import threading
import uuid

import pytest
from open311_support import INSIDE, onboard_tenant
from sqlalchemy import func, select

from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from hub.open311.router import _post_request
from hub.requests.models import ServiceRequest
from hub.requests.schemas import IntakeData
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


def test_concurrent_same_key_stores_one_request(pg_hub):
    engine = get_engine(pg_hub)
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
    barrier = threading.Barrier(4)
    results, errors = [], []

    def post() -> None:
        barrier.wait()
        try:
            results.append(_post_request(tenant, ctx, data, "race-key", "same-hash", False, "en"))
        except Exception as exc:  # noqa: BLE001 - the assert below reports it
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len({result.service_request_id for result in results}) == 1
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        stored = session.scalar(
            select(func.count())
            .select_from(ServiceRequest)
            .where(ServiceRequest.tenant_id == keys.id)
        )
    assert stored == 1
