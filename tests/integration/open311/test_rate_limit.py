"""Per-key limits on Open311 POST requests: the shared bucket on SQLite and PostgreSQL, the
429 response in JSON and XML, and two app instances that share one PostgreSQL database."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from types import SimpleNamespace

import pytest
import structlog
from fastapi.testclient import TestClient
from open311_support import error_entries, manifest_data, pothole_form
from prometheus_client import REGISTRY
from sqlalchemy import select
from structlog.testing import capture_logs

from hub.api.app import create_app
from hub.core.db import get_engine, unit_of_work
from hub.core.settings import Settings
from hub.core.tenancy import SystemContext, TenantContext
from hub.open311 import ratelimit
from hub.open311.models import PostBucket
from hub.requests.models import ServiceRequest
from tenants.keys import create_api_key
from tenants.manifest import parse_manifest
from tenants.onboarding import onboard

POST_PATH = "/open311/v2/requests.{fmt}"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _onboard(engine, *, limit: object = "default") -> tuple[str, str]:
    """Onboard a tenant whose manifest sets `open311.max_posts_per_minute_per_key` to `limit`
    (left out for "default"); return its id and its jurisdiction."""
    tenant_id = f"limited-{uuid.uuid4().hex[:8]}"
    jurisdiction = f"{tenant_id}.example.org"
    data = manifest_data(tenant_id, jurisdiction, region=f"region-{tenant_id}")
    if limit != "default":
        data["open311"] = {"max_posts_per_minute_per_key": limit}
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        onboard(session, parse_manifest(data), actor="test")
    return tenant_id, jurisdiction


def _key(engine, tenant_id: str, max_posts_per_minute: int | None = None) -> tuple[int, str]:
    with unit_of_work(SystemContext("test key"), engine=engine) as session:
        row, raw = create_api_key(
            session,
            TenantContext(tenant_id, actor="test"),
            roles=["open311"],
            label="rate limit test",
            max_posts_per_minute=max_posts_per_minute,
        )
        return row.id, raw


class _Tenant:
    """The fields of `TenantKeys` that `pothole_form` reads."""

    def __init__(self, jurisdiction: str, api_key: str) -> None:
        self.jurisdiction = jurisdiction
        self.open311 = api_key


def _post(client: TestClient, tenant: _Tenant, fmt: str = "json"):
    return client.post(POST_PATH.format(fmt=fmt), data=pothole_form(tenant))


def _stored(engine, tenant_id: str) -> int:
    with unit_of_work(TenantContext(tenant_id, actor="test"), engine=engine) as session:
        return len(session.scalars(select(ServiceRequest.id)).all())


def _rejections(tenant_id: str) -> float:
    value = REGISTRY.get_sample_value("hub_open311_rate_limited_total", {"tenant": tenant_id})
    return value or 0.0


# --- the shared bucket ---------------------------------------------------------------------


@pytest.fixture
def bucket(hub_db):
    """A new tenant's key, with the context, engine and fake clock that take its tokens."""
    engine = get_engine(hub_db)
    tenant_id, _ = _onboard(engine)
    key_id, _raw = _key(engine, tenant_id)
    return SimpleNamespace(
        ctx=TenantContext(tenant_id, actor="test"), key_id=key_id, engine=engine, clock=FakeClock()
    )


def test_take_grants_burst_then_refill(bucket):
    ctx, key_id, engine, clock = bucket.ctx, bucket.key_id, bucket.engine, bucket.clock

    first = ratelimit.take(ctx, key_id, 4, 6, engine=engine, clock=clock)
    second = ratelimit.take(ctx, key_id, 4, 6, engine=engine, clock=clock)
    clock.now += 10.0  # 6 a minute refills one call in 10 s
    third = ratelimit.take(ctx, key_id, 3, 6, engine=engine, clock=clock)

    assert first.granted == 4
    assert first.wait_seconds == 0.0
    assert second.granted == 2
    assert second.wait_seconds == pytest.approx(10.0)
    assert third.granted == 1
    assert third.wait_seconds == pytest.approx(10.0)


def test_take_keeps_fractions_of_calls(bucket):
    ctx, key_id, engine, clock = bucket.ctx, bucket.key_id, bucket.engine, bucket.clock

    ratelimit.take(ctx, key_id, 6, 6, engine=engine, clock=clock)
    clock.now += 4.0
    early = ratelimit.take(ctx, key_id, 1, 6, engine=engine, clock=clock)
    clock.now += 6.0
    on_time = ratelimit.take(ctx, key_id, 1, 6, engine=engine, clock=clock)

    assert early.granted == 0
    assert early.wait_seconds == pytest.approx(6.0)
    assert on_time.granted == 1


def test_take_never_exceeds_capacity(bucket):
    ctx, key_id, engine, clock = bucket.ctx, bucket.key_id, bucket.engine, bucket.clock

    ratelimit.take(ctx, key_id, 1, 5, engine=engine, clock=clock)
    clock.now += 3600.0
    after_an_hour = ratelimit.take(ctx, key_id, 20, 5, engine=engine, clock=clock)

    assert after_an_hour.granted == 5
    with unit_of_work(ctx, engine=engine) as session:
        row = session.scalars(select(PostBucket)).one()
    assert row.tokens == 0
    assert row.updated == clock.now


# --- through the API -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_post_over_manifest_limit_is_429(client, hub_db, fmt):
    engine = get_engine(hub_db)
    tenant_id, jurisdiction = _onboard(engine, limit=3)
    _key_id, raw = _key(engine, tenant_id)
    tenant = _Tenant(jurisdiction, raw)

    accepted = [_post(client, tenant, fmt) for _ in range(3)]
    rejected = _post(client, tenant, fmt)

    assert [response.status_code for response in accepted] == [201, 201, 201]
    assert rejected.status_code == 429
    assert int(rejected.headers["retry-after"]) >= 1
    expected_type = "application/json" if fmt == "json" else "text/xml"
    assert rejected.headers["content-type"].startswith(expected_type)
    [(code, description)] = error_entries(rejected, fmt)
    assert code == 429
    assert "limit of 3 POST requests a minute" in description
    assert _stored(engine, tenant_id) == 3


def test_post_over_key_limit_counts_and_logs(client, hub_db, monkeypatch):
    engine = get_engine(hub_db)
    tenant_id, jurisdiction = _onboard(engine)
    key_id, raw = _key(engine, tenant_id, max_posts_per_minute=2)
    tenant = _Tenant(jurisdiction, raw)
    before = _rejections(tenant_id)
    # A logger of the test's own: capture_logs misses one that structlog cached earlier.
    monkeypatch.setattr(ratelimit, "log", structlog.get_logger(ratelimit.__name__))

    with capture_logs() as logs:
        statuses = [_post(client, tenant).status_code for _ in range(6)]

    assert statuses == [201, 201, 429, 429, 429, 429]
    assert _rejections(tenant_id) - before == 4
    lines = [line for line in logs if line["event"] == "open311_post_rate_limited"]
    assert len(lines) == 1
    assert lines[0]["key_id"] == key_id
    assert lines[0]["tenant_id"] == tenant_id
    assert _stored(engine, tenant_id) == 2


def test_limit_off_in_manifest(client, hub_db):
    engine = get_engine(hub_db)
    tenant_id, jurisdiction = _onboard(engine, limit=None)
    _key_id, raw = _key(engine, tenant_id)
    tenant = _Tenant(jurisdiction, raw)

    statuses = [_post(client, tenant).status_code for _ in range(5)]

    assert statuses == [201] * 5
    with unit_of_work(TenantContext(tenant_id, actor="test"), engine=engine) as session:
        assert session.scalars(select(PostBucket)).all() == []


def test_key_limit_zero_turns_limit_off(client, hub_db):
    engine = get_engine(hub_db)
    tenant_id, jurisdiction = _onboard(engine, limit=1)
    _key_id, raw = _key(engine, tenant_id, max_posts_per_minute=0)
    tenant = _Tenant(jurisdiction, raw)

    statuses = [_post(client, tenant).status_code for _ in range(3)]

    assert statuses == [201] * 3


def test_keys_have_separate_buckets(client, hub_db):
    engine = get_engine(hub_db)
    tenant_id, jurisdiction = _onboard(engine, limit=1)
    _first_id, first = _key(engine, tenant_id)
    _second_id, second = _key(engine, tenant_id)

    statuses = [
        _post(client, _Tenant(jurisdiction, first)).status_code,
        _post(client, _Tenant(jurisdiction, first)).status_code,
        _post(client, _Tenant(jurisdiction, second)).status_code,
    ]

    assert statuses == [201, 429, 201]


def test_batch_rejects_only_calls_over_limit(hub_db):
    """Calls that arrive together share one take: the first ones up to the limit are stored."""
    engine = get_engine(hub_db)
    tenant_id, jurisdiction = _onboard(engine, limit=5)
    _key_id, raw = _key(engine, tenant_id)
    tenant = _Tenant(jurisdiction, raw)

    with TestClient(create_app(start_relay=False)) as client:
        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(lambda _: _post(client, tenant).status_code, range(12)))

    assert sorted(statuses) == [201] * 5 + [429] * 7
    assert _stored(engine, tenant_id) == 5


# --- two app instances on one PostgreSQL database -------------------------------------------


@pytest.fixture
def two_apps(hub_db: str):
    """Two API instances with their own limiters and event loops, like two processes."""
    settings = Settings(database_url=hub_db)
    with ExitStack() as stack:
        yield [
            stack.enter_context(TestClient(create_app(settings, start_relay=False)))
            for _ in range(2)
        ]


on_postgresql = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@on_postgresql
def test_two_apps_share_one_limit(two_apps, hub_db):
    engine = get_engine(hub_db)
    tenant_id, jurisdiction = _onboard(engine, limit=10)
    _key_id, raw = _key(engine, tenant_id)
    tenant = _Tenant(jurisdiction, raw)
    started = time.monotonic()

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(
            pool.map(lambda index: _post(two_apps[index % 2], tenant).status_code, range(40))
        )
    elapsed = time.monotonic() - started

    accepted = statuses.count(201)
    # The bucket refills 10 calls a minute, so a slow run may see a few more.
    assert 10 <= accepted <= 10 + int(elapsed * 10 / 60)
    assert statuses.count(429) == 40 - accepted
    assert _stored(engine, tenant_id) == accepted


@on_postgresql
def test_second_app_rejects_after_first_emptied_bucket(two_apps, hub_db):
    engine = get_engine(hub_db)
    tenant_id, jurisdiction = _onboard(engine, limit=2)
    _key_id, raw = _key(engine, tenant_id)
    tenant = _Tenant(jurisdiction, raw)
    first_app, second_app = two_apps

    from_first = [_post(first_app, tenant).status_code for _ in range(2)]
    from_second = _post(second_app, tenant)

    assert from_first == [201, 201]
    assert from_second.status_code == 429
    # 2 a minute refills one call in 30 s.
    assert 1 <= int(from_second.headers["retry-after"]) <= 30
