"""Per-agency delivery caps (`max_deliveries_per_minute`) against a real database.

Claims take `now` from the test, so slots minutes apart need no waiting.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from pipeline_support import add_request, add_tenant
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select

from hub.cli.demo.receiver import AgencyReceiver
from hub.core.clock import as_utc, utcnow
from hub.core.db import unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import routing
from hub.requests.models import Delivery
from hub.requests.tasks import route
from tenants.models import Agency


def _cap(engine: Engine, tenant_id: str, code: str, per_minute: float) -> None:
    with unit_of_work(SystemContext("test: cap an agency"), engine=engine) as session:
        agency = session.scalars(
            select(Agency).where(Agency.tenant_id == tenant_id, Agency.code == code)
        ).one()
        agency.max_deliveries_per_minute = per_minute


def _claim(engine: Engine, tenant_id: str, request_id: str, now: datetime) -> list[str]:
    """Claim the request's due deliveries at `now`; return the agency codes claimed."""
    ctx = TenantContext(tenant_id=tenant_id, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        claims = routing.claim_deliveries(session, ctx, request_id, now=now)
    return sorted(claim.destination for claim in claims)


def _delivery(engine: Engine, request_id: str, code: str) -> Delivery:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        return session.scalars(
            select(Delivery).where(Delivery.request_id == request_id, Delivery.destination == code)
        ).one()


def _next_slot(engine: Engine, tenant_id: str, code: str) -> datetime | None:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        value = session.scalar(
            select(Agency.next_send_slot_at).where(
                Agency.tenant_id == tenant_id, Agency.code == code
            )
        )
    return as_utc(value) if value is not None else None


def _deferred_count(tenant_id: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "hub_requests_deliveries_deferred_total", {"tenant": tenant_id, "agency": code}
    )
    return value or 0.0


def test_cap_defers_second_delivery(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "parks"])
    _cap(configured_db, tenant_id, "dpw", 6)
    first = add_request(configured_db, tenant_id, ["dpw", "parks"])
    second = add_request(configured_db, tenant_id, ["dpw", "parks"])
    now = utcnow()

    assert _claim(configured_db, tenant_id, first, now) == ["dpw", "parks"]
    assert _claim(configured_db, tenant_id, second, now) == ["parks"]

    waiting = _delivery(configured_db, second, "dpw")
    assert waiting.state == "pending"
    assert waiting.attempts == 0
    assert waiting.first_attempt_at is None
    assert as_utc(waiting.next_attempt_at) == now + timedelta(seconds=10)
    assert as_utc(waiting.send_slot_at) == now + timedelta(seconds=10)
    assert _next_slot(configured_db, tenant_id, "dpw") == now + timedelta(seconds=20)
    assert _next_slot(configured_db, tenant_id, "parks") is None
    assert _deferred_count(tenant_id, "dpw") == 1
    assert _deferred_count(tenant_id, "parks") == 0
    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        messages = session.scalars(
            select(OutboxMessage).where(OutboxMessage.task == routing.ROUTE_TASK)
        ).all()
    retries = [message for message in messages if message.kwargs.get("request_id") == second]
    assert len(retries) == 1
    assert as_utc(retries[0].available_at) >= now + timedelta(seconds=9)


def test_deferred_delivery_sent_at_slot(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    _cap(configured_db, tenant_id, "dpw", 6)
    first = add_request(configured_db, tenant_id, ["dpw"])
    second = add_request(configured_db, tenant_id, ["dpw"])
    now = utcnow()
    _claim(configured_db, tenant_id, first, now)
    _claim(configured_db, tenant_id, second, now)

    early = _claim(configured_db, tenant_id, second, now + timedelta(seconds=9))
    on_time = _claim(configured_db, tenant_id, second, now + timedelta(seconds=10))

    assert early == []
    assert on_time == ["dpw"]
    sent = _delivery(configured_db, second, "dpw")
    assert sent.attempts == 1
    assert sent.send_slot_at is None
    # The held slot was used, so no second slot was reserved for the delivery.
    assert _next_slot(configured_db, tenant_id, "dpw") == now + timedelta(seconds=20)


def test_deferral_keeps_failed_attempts(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    _cap(configured_db, tenant_id, "dpw", 1)
    first = add_request(configured_db, tenant_id, ["dpw"])
    retried = add_request(configured_db, tenant_id, ["dpw"])
    now = utcnow()
    started = now - timedelta(minutes=5)
    with unit_of_work(SystemContext("test: a failed delivery"), engine=configured_db) as session:
        row = session.scalars(select(Delivery).where(Delivery.request_id == retried)).one()
        row.state = "failed"
        row.attempts = 3
        row.first_attempt_at = started
        row.last_error = "HTTP 503"
        row.next_attempt_at = now
    _claim(configured_db, tenant_id, first, now)

    assert _claim(configured_db, tenant_id, retried, now) == []

    waiting = _delivery(configured_db, retried, "dpw")
    assert waiting.state == "failed"
    assert waiting.attempts == 3
    assert as_utc(waiting.first_attempt_at) == started
    assert waiting.last_error == "HTTP 503"
    assert as_utc(waiting.next_attempt_at) == now + timedelta(minutes=1)


def test_late_claim_reserves_new_slot(configured_db: Engine, receiver: AgencyReceiver) -> None:
    """Deliveries whose slots passed while no worker ran go out at the rate, not at once."""
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    _cap(configured_db, tenant_id, "dpw", 6)
    requests = [add_request(configured_db, tenant_id, ["dpw"]) for _ in range(4)]
    now = utcnow()
    for request_id in requests:
        _claim(configured_db, tenant_id, request_id, now)

    later = now + timedelta(minutes=5)
    claimed = [_claim(configured_db, tenant_id, request_id, later) for request_id in requests[1:]]

    assert claimed == [["dpw"], [], []]
    slots = [_delivery(configured_db, request_id, "dpw").send_slot_at for request_id in requests]
    assert slots[:2] == [None, None]
    assert [as_utc(slot) for slot in slots[2:]] == [
        later + timedelta(seconds=10),
        later + timedelta(seconds=20),
    ]


def test_concurrent_claims_keep_rate(configured_db: Engine, receiver: AgencyReceiver) -> None:
    """Two workers claiming at the same moment get slots one interval apart, never two sends
    at once."""
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    _cap(configured_db, tenant_id, "dpw", 60)
    requests = [add_request(configured_db, tenant_id, ["dpw"]) for _ in range(8)]
    now = utcnow()
    start = threading.Barrier(2)

    def worker(request_ids: list[str]) -> list[str]:
        start.wait(timeout=30)
        sent: list[str] = []
        for request_id in request_ids:
            sent += _claim(configured_db, tenant_id, request_id, now)
        return sent

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(worker, [requests[0::2], requests[1::2]]))

    assert sum(len(sent) for sent in results) == 1
    slots = sorted(
        as_utc(row.send_slot_at)
        for row in (_delivery(configured_db, request_id, "dpw") for request_id in requests)
        if row.send_slot_at is not None
    )
    assert slots == [now + timedelta(seconds=n) for n in range(1, 8)]
    assert _next_slot(configured_db, tenant_id, "dpw") == now + timedelta(seconds=8)


def test_route_task_sends_within_cap(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "parks"])
    _cap(configured_db, tenant_id, "dpw", 1)
    requests = [add_request(configured_db, tenant_id, ["dpw", "parks"]) for _ in range(3)]

    outcomes = [route(request_id, tenant_id=tenant_id) for request_id in requests]

    assert outcomes == [{"sent": 2}, {"sent": 1}, {"sent": 1}]
    assert receiver.count_for(receiver.path_for(tenant_id, "dpw")) == 1
    assert receiver.count_for(receiver.path_for(tenant_id, "parks")) == 3


def test_uncapped_agency_keeps_no_slots(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    requests = [add_request(configured_db, tenant_id, ["dpw"]) for _ in range(3)]
    now = utcnow()

    claimed = [_claim(configured_db, tenant_id, request_id, now) for request_id in requests]

    assert claimed == [["dpw"], ["dpw"], ["dpw"]]
    assert _next_slot(configured_db, tenant_id, "dpw") is None
    assert all(
        _delivery(configured_db, request_id, "dpw").send_slot_at is None for request_id in requests
    )
