"""The per-(tenant, channel) token bucket shared by worker processes through the database.

Two threads stand in for two worker processes: each takes tokens in its own sessions, and the
bucket keeps no state in Python, so threads and processes meet the same row. A controlled
clock replaces wall-clock time, so the checks are on the bucket arithmetic alone.
"""

from __future__ import annotations

import threading

import pytest
from alerts_support import NYC_POINT, HttpReceiver, add_resident, add_tenant, cap_alert, manager
from sqlalchemy import Engine, select

from hub.alerts import fanout, workflow
from hub.alerts import models as m
from hub.alerts.ratelimit import Grant, capacity_for, refill, take_tokens
from hub.core.db import unit_of_work

# The receivers listen on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")

START = 1_800_000_000.0
RATE = 100.0
CHUNKS_PER_WORKER = 10
CHUNK = 30


class SteppingClock:
    """A clock shared by the threads that moves on by `step` seconds at every reading."""

    def __init__(self, step: float):
        self.step = step
        self.now = START
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now += self.step
            return self.now


def due_times(grants: list[Grant]) -> list[float]:
    """Return the clock time at which each granted message may go out."""
    return sorted(g.taken_at + g.delay(i) for g in grants for i in range(g.count))


def take_in_two_workers(engine: Engine, tenant_id: str, clock: SteppingClock) -> list[Grant]:
    grants: list[Grant] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            for _ in range(CHUNKS_PER_WORKER):
                with unit_of_work(manager(tenant_id), engine=engine) as session:
                    grant = take_tokens(session, tenant_id, "sms", CHUNK, RATE, clock=clock)
                with lock:
                    grants.append(grant)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(grants) == 2 * CHUNKS_PER_WORKER
    return grants


def test_refill_caps_at_capacity() -> None:
    assert refill(10.0, START, START + 1.0, rate=5.0, capacity=12.0) == 12.0
    assert refill(-20.0, START, START + 2.0, rate=5.0, capacity=12.0) == -10.0


def test_refill_ignores_clock_going_back() -> None:
    assert refill(3.0, START, START - 5.0, rate=5.0, capacity=12.0) == 3.0


def test_grant_spaces_messages_beyond_tokens() -> None:
    grant = Grant(taken_at=START, available=2.0, rate=10.0, count=5)
    assert [grant.delay(i) for i in range(5)] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])


def test_take_tokens_rejects_zero_rate(engine: Engine) -> None:
    tenant = add_tenant(engine)
    with unit_of_work(manager(tenant), engine=engine) as session:
        with pytest.raises(ValueError, match="must be positive"):
            take_tokens(session, tenant, "sms", 1, 0.0)


def test_two_workers_share_frozen_bucket(engine: Engine) -> None:
    """With time standing still, every token is handed out exactly once across workers."""
    tenant = add_tenant(engine)
    clock = SteppingClock(step=0.0)
    grants = take_in_two_workers(engine, tenant, clock)

    total = 2 * CHUNKS_PER_WORKER * CHUNK
    capacity = capacity_for(RATE)
    expected = [START + max(0.0, (k + 1 - capacity) / RATE) for k in range(total)]
    assert due_times(grants) == pytest.approx(expected)


def test_two_workers_stay_at_rate(engine: Engine) -> None:
    """In every window from the first take, both workers together get at most
    capacity + rate * window messages, which is the limit of one bucket."""
    tenant = add_tenant(engine)
    clock = SteppingClock(step=0.05)
    grants = take_in_two_workers(engine, tenant, clock)

    first = min(g.taken_at for g in grants)
    capacity = capacity_for(RATE)
    times = due_times(grants)
    for count, due in enumerate(times, start=1):
        # The tolerance covers rounding of clock values near 1.8e9 s, not a real excess.
        assert count <= capacity + RATE * (due - first) + 1e-3, f"message {count} due at {due}"
    # The workers asked for 600 tokens in about 1 s of clock time, so the rate decides the
    # last message's time, not the clock.
    assert times[-1] - first == pytest.approx((len(times) - capacity) / RATE, abs=0.01)


def test_delivery_takes_from_shared_bucket(engine: Engine) -> None:
    receiver = HttpReceiver().start()
    try:
        tenant = add_tenant(engine, alerts={"rate_limits": {"webhook": 50}})
        for number in range(3):
            add_resident(engine, tenant, NYC_POINT, {"webhook": receiver.url(f"/r{number}")})
        [row] = workflow.compose(engine, manager(tenant), cap_alert("RATE-1"))
        workflow.approve(engine, manager(tenant, "em2"), row["id"])
        workflow.send(engine, manager(tenant), row["id"])
        fanout.deliver_batch(row["id"], 0, tenant, engine=engine, clock=lambda: START)
    finally:
        receiver.stop()

    assert sum(receiver.received.keys.values()) == 3
    with unit_of_work(manager(tenant), engine=engine) as session:
        bucket = session.scalar(select(m.RateBucket).where(m.RateBucket.channel == "webhook"))
    assert bucket is not None
    assert bucket.tokens == pytest.approx(50 - 3)
    assert bucket.updated == START
