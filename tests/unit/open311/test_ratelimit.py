"""The Open311 POST limiter of one process: limits per key, remembered waits, grants of a
batch, and the 429 error it raises."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from hub.core.errors import TooManyRequests
from hub.core.tenancy import TenantContext
from hub.open311 import ratelimit
from hub.open311.ratelimit import PostLimiter, Take
from tenants.keys import ApiCredential
from tenants.manifest import DEFAULT_MAX_POSTS_PER_MINUTE_PER_KEY, Open311Section


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _tenant(limit: int | None) -> SimpleNamespace:
    section = Open311Section(max_posts_per_minute_per_key=limit)
    return SimpleNamespace(manifest=SimpleNamespace(open311=section))


def _credential(own: int | None) -> ApiCredential:
    return ApiCredential("city", 7, frozenset({"open311"}), max_posts_per_minute=own)


def _tenant_id() -> str:
    return f"city-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("manifest_limit", "own_limit", "expected"),
    [
        (600, None, 600),
        (600, 20, 20),
        (600, 0, None),
        (None, None, None),
        (None, 50, 50),
    ],
)
def test_post_limit_prefers_key_limit(manifest_limit, own_limit, expected):
    limit = ratelimit.post_limit(_tenant(manifest_limit), _credential(own_limit))
    assert limit == expected


def test_manifest_default_limit():
    assert Open311Section().max_posts_per_minute_per_key == DEFAULT_MAX_POSTS_PER_MINUTE_PER_KEY
    assert DEFAULT_MAX_POSTS_PER_MINUTE_PER_KEY == 600


def test_check_rejects_until_wait_ends():
    clock = FakeClock()
    limiter = PostLimiter(clock=clock)
    tenant_id = _tenant_id()
    limiter.record(7, Take(granted=0, wait_seconds=2.5))

    with pytest.raises(TooManyRequests) as rejected:
        limiter.check(tenant_id, 7, 24)
    clock.now += 2.5
    limiter.check(tenant_id, 7, 24)

    assert rejected.value.retry_after_seconds == 3
    assert rejected.value.headers == {"Retry-After": "3"}
    assert rejected.value.status == 429


def test_check_passes_unknown_key():
    limiter = PostLimiter(clock=FakeClock())
    limiter.record(7, Take(granted=3, wait_seconds=0.0))
    limiter.check(_tenant_id(), 7, 24)
    limiter.check(_tenant_id(), 8, 24)


def test_record_forgets_ended_waits_when_full(monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_DENIED_KEYS", 3)
    clock = FakeClock()
    limiter = PostLimiter(clock=clock)
    for key_id in (1, 2, 3):
        limiter.record(key_id, Take(granted=0, wait_seconds=float(key_id)))
    clock.now += 1.5
    limiter.record(4, Take(granted=0, wait_seconds=10.0))

    limiter.check("city", 1, 60)
    with pytest.raises(TooManyRequests):
        limiter.check("city", 2, 60)
    with pytest.raises(TooManyRequests):
        limiter.check("city", 4, 60)


def test_rejection_retry_after_at_least_one_second():
    error = ratelimit.rejection(_tenant_id(), 7, 6000, 0.01)
    assert error.retry_after_seconds == 1
    assert "limit of 6000 POST requests a minute" in error.message


def test_rejection_counts_every_call_and_logs_one_line(monkeypatch):
    tenant_id = _tenant_id()
    # structlog caches a module's logger on first use, and capture_logs misses a cached one.
    # A new logger for this test is captured whatever ran before.
    monkeypatch.setattr(ratelimit, "log", structlog.get_logger(ratelimit.__name__))

    with capture_logs() as logs:
        for _ in range(5):
            ratelimit.rejection(tenant_id, 7, 60, 1.0)

    counted = REGISTRY.get_sample_value("hub_open311_rate_limited_total", {"tenant": tenant_id})
    lines = [line for line in logs if line["event"] == "open311_post_rate_limited"]
    assert counted == 5
    assert len(lines) == 1
    assert lines[0]["key_id"] == 7
    assert lines[0]["retry_after_seconds"] == 1


def test_admit_grants_earlier_calls_first(monkeypatch):
    takes: list[tuple[int, int, int]] = []

    def fake_take(_ctx, key_id, count, per_minute, **_kwargs):
        takes.append((key_id, count, per_minute))
        granted = {1: 2, 2: 1}[key_id]
        return Take(granted=granted, wait_seconds=4.0 if granted < count else 0.0)

    monkeypatch.setattr(ratelimit, "take", fake_take)
    limiter = PostLimiter(clock=FakeClock())
    ctx = TenantContext(_tenant_id(), actor="test")

    outcomes = limiter.admit(ctx, [(1, 60), (2, 30), None, (1, 60), (1, 60)])

    assert sorted(takes) == [(1, 3, 60), (2, 1, 30)]
    assert outcomes[:4] == [None, None, None, None]
    assert isinstance(outcomes[4], TooManyRequests)
    assert outcomes[4].retry_after_seconds == 4
    with pytest.raises(TooManyRequests):
        limiter.check(ctx.tenant_id, 1, 60)
    limiter.check(ctx.tenant_id, 2, 30)


def test_admit_without_limits_takes_nothing(monkeypatch):
    def no_take(*_args, **_kwargs):
        raise AssertionError("take called for calls without a limit")

    monkeypatch.setattr(ratelimit, "take", no_take)
    limiter = PostLimiter(clock=FakeClock())

    outcomes = limiter.admit(TenantContext("city", actor="test"), [None, None])

    assert outcomes == [None, None]


def test_take_rejects_empty_count():
    with pytest.raises(ValueError, match="count and per_minute"):
        ratelimit.take(TenantContext("city", actor="test"), 7, 0, 60)
