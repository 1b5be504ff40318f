"""The routing task against a real database and a loopback agency receiver."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from pipeline_support import (
    add_duplicate_pair,
    add_request,
    add_service,
    add_tenant,
    create_database,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from hub.cli.bench_support import drop_database
from hub.cli.demo.receiver import AgencyReceiver
from hub.core.clock import as_utc, utcnow
from hub.core.db import dispose_engines, get_engine, unit_of_work
from hub.core.migrate import upgrade
from hub.core.outbox import OutboxMessage
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import routing, tasks
from hub.requests.models import Delivery, ServiceRequest, StatusEvent
from hub.requests.tasks import route, route_batch
from hub.requests.webhook import SendResult
from tenants.models import Tenant


def _deliveries(engine: Engine, request_id: str) -> dict[str, Delivery]:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        rows = session.scalars(select(Delivery).where(Delivery.request_id == request_id)).all()
        return {row.destination: row for row in rows}


def _events(engine: Engine, request_id: str) -> list[StatusEvent]:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        return list(
            session.scalars(select(StatusEvent).where(StatusEvent.request_id == request_id))
        )


def _route_messages(engine: Engine, request_id: str) -> list[OutboxMessage]:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        rows = session.scalars(
            select(OutboxMessage).where(OutboxMessage.task == routing.ROUTE_TASK)
        ).all()
        return [row for row in rows if row.kwargs.get("request_id") == request_id]


def test_route_sends_each_agency_once(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "parks"])
    request_id = add_request(configured_db, tenant_id, ["dpw", "parks"])

    first = route(request_id, tenant_id=tenant_id)
    second = route(request_id, tenant_id=tenant_id)

    assert first == {"sent": 2}
    assert second == {}
    assert receiver.count_for(receiver.path_for(tenant_id, "dpw")) == 1
    assert receiver.count_for(receiver.path_for(tenant_id, "parks")) == 1
    assert sum(receiver.duplicates.values()) == 0
    assert sum(receiver.rejected.values()) == 0
    deliveries = _deliveries(configured_db, request_id)
    assert {row.state for row in deliveries.values()} == {"sent"}
    assert all(row.attempts == 1 for row in deliveries.values())


def test_route_payload_is_decrypted(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    request_id = add_request(
        configured_db,
        tenant_id,
        ["dpw"],
        description="Bache grande ñ 🚧",
        address_id="PARCEL-0077-1203",
    )

    route(request_id, tenant_id=tenant_id)

    (item,) = receiver.snapshot()
    assert item.signature_ok
    assert item.payload["description"] == "Bache grande ñ 🚧"
    assert item.payload["address_id"] == "PARCEL-0077-1203"
    assert item.payload["service_request_id"] == request_id
    assert item.payload["agency_code"] == "dpw"
    assert item.payload["jurisdiction_id"] == f"{tenant_id}.example.org"
    assert item.delivery_id == item.payload["delivery_id"]
    assert item.delivery_id == _deliveries(configured_db, request_id)["dpw"].public_id


@pytest.fixture(params=["sqlite", "postgresql"])
def two_new_databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Engine, Engine]]:
    """Two empty, migrated databases of one backend, as before and after a rebuild."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path / name}" for name in ("old.db", "new.db")]
        for url in urls:
            upgrade(url)
        yield get_engine(urls[0]), get_engine(urls[1])
        dispose_engines()
        return
    server = request.getfixturevalue("pg_server")
    urls = [create_database(server) for _ in range(2)]
    try:
        yield get_engine(urls[0]), get_engine(urls[1])
    finally:
        for url in urls:
            drop_database(server, url)


def _claim_one(engine: Engine, tenant_id: str, request_id: str) -> routing.Claim:
    ctx = TenantContext(tenant_id=tenant_id, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        (claim,) = routing.claim_deliveries(session, ctx, request_id)
    return claim


def test_delivery_id_differs_across_databases(
    two_new_databases: tuple[Engine, Engine], receiver: AgencyReceiver
) -> None:
    """The first delivery of one tenant in two new databases, as after a rebuild or a move to
    PostgreSQL, gets two ids, so a receiver that drops repeats keeps both requests."""
    claims = []
    for engine in two_new_databases:
        add_tenant(engine, receiver, ["dpw"], tenant_id="boston")
        request_id = add_request(engine, "boston", ["dpw"])
        claims.append(_claim_one(engine, "boston", request_id))

    old, new = claims
    old_id, new_id = (json.loads(claim.body)["delivery_id"] for claim in claims)
    assert old.delivery_id == new.delivery_id
    assert old_id != new_id
    assert old_id == old.public_id
    assert new_id == new.public_id


def test_delivery_id_same_on_retry(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    request_id = add_request(configured_db, tenant_id, ["dpw"])
    ctx = TenantContext(tenant_id=tenant_id, actor="test")
    first = _claim_one(configured_db, tenant_id, request_id)
    with unit_of_work(ctx, engine=configured_db) as session:
        failed = SendResult(ok=False, transient=True, error="HTTP 503")
        assert routing.record_outcome(session, ctx, first, failed) == "retry"
    with unit_of_work(ctx, engine=configured_db) as session:
        row = session.scalars(select(Delivery).where(Delivery.request_id == request_id)).one()
        row.next_attempt_at = utcnow() - timedelta(seconds=1)

    second = _claim_one(configured_db, tenant_id, request_id)

    assert second.attempt == 2
    assert second.public_id == first.public_id
    assert json.loads(second.body)["delivery_id"] == first.public_id
    assert _deliveries(configured_db, request_id)["dpw"].public_id == first.public_id


def test_payload_names_duplicate_and_service(
    configured_db: Engine, receiver: AgencyReceiver
) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    with unit_of_work(SystemContext("test: language"), engine=configured_db) as session:
        session.get(Tenant, tenant_id).default_language = "es"
    add_service(configured_db, tenant_id, {"en": "Pothole", "es": "Bache"})
    original, duplicate = add_duplicate_pair(configured_db, tenant_id, ["dpw"])

    route(original, tenant_id=tenant_id)
    route(duplicate, tenant_id=tenant_id)

    payloads = {item.payload["service_request_id"]: item.payload for item in receiver.snapshot()}
    assert payloads[duplicate]["duplicate_of"] == original
    assert payloads[original]["duplicate_of"] is None
    assert payloads[duplicate]["service_name"] == "Bache"
    assert payloads[original]["service_name"] == "Bache"


def test_payload_service_name_without_catalog(
    configured_db: Engine, receiver: AgencyReceiver
) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    request_id = add_request(configured_db, tenant_id, ["dpw"])

    route(request_id, tenant_id=tenant_id)

    (item,) = receiver.snapshot()
    assert "service_name" in item.payload
    assert item.payload["service_name"] is None


def test_route_acknowledges_request_once(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "parks"])
    request_id = add_request(configured_db, tenant_id, ["dpw", "parks"])

    route(request_id, tenant_id=tenant_id)
    route(request_id, tenant_id=tenant_id)

    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        status = session.get(ServiceRequest, request_id).status
    events = _events(configured_db, request_id)
    assert status == "acknowledged"
    assert [event.status for event in events] == ["acknowledged"]
    assert events[0].channel == "webhook"


def test_failing_agency_retries_others_sent(
    configured_db: Engine, receiver: AgencyReceiver
) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "water"])
    receiver.fail_paths[receiver.path_for(tenant_id, "water")] = 503
    request_id = add_request(configured_db, tenant_id, ["dpw", "water"])

    outcomes = route(request_id, tenant_id=tenant_id)

    deliveries = _deliveries(configured_db, request_id)
    assert outcomes == {"sent": 1, "retry": 1}
    assert deliveries["dpw"].state == "sent"
    assert deliveries["water"].state == "failed"
    assert deliveries["water"].attempts == 1
    assert deliveries["water"].last_error == "HTTP 503"
    assert as_utc(deliveries["water"].next_attempt_at) > utcnow()
    retries = _route_messages(configured_db, request_id)
    assert len(retries) == 1
    assert as_utc(retries[0].available_at) > as_utc(retries[0].created_at)


def test_retry_sends_after_agency_recovers(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "water"])
    water = receiver.path_for(tenant_id, "water")
    receiver.fail_paths[water] = 429
    request_id = add_request(configured_db, tenant_id, ["dpw", "water"])
    route(request_id, tenant_id=tenant_id)

    not_yet_due = route(request_id, tenant_id=tenant_id)
    del receiver.fail_paths[water]
    with unit_of_work(SystemContext("test: make the retry due"), engine=configured_db) as session:
        row = session.scalars(
            select(Delivery).where(
                Delivery.destination == "water", Delivery.request_id == request_id
            )
        ).one()
        row.next_attempt_at = utcnow() - timedelta(seconds=1)
    retried = route(request_id, tenant_id=tenant_id)

    assert not_yet_due == {}
    assert retried == {"sent": 1}
    assert receiver.count_for(water) == 1
    assert _deliveries(configured_db, request_id)["water"].attempts == 2
    assert receiver.count_for(receiver.path_for(tenant_id, "dpw")) == 1


def test_client_error_is_permanent(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    receiver.fail_paths[receiver.path_for(tenant_id, "dpw")] = 404
    request_id = add_request(configured_db, tenant_id, ["dpw"])

    outcomes = route(request_id, tenant_id=tenant_id)

    row = _deliveries(configured_db, request_id)["dpw"]
    assert outcomes == {"dead": 1}
    assert row.state == "dead"
    assert row.last_error == "HTTP 404"
    assert _route_messages(configured_db, request_id) == []


def test_connection_refused_is_transient(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with unit_of_work(SystemContext("test: point at a closed port"), engine=configured_db) as s:
        from tenants.models import Agency

        agency = s.scalars(select(Agency).where(Agency.tenant_id == tenant_id)).one()
        agency.webhook_url = f"http://127.0.0.1:{closed_port}/hook"
    request_id = add_request(configured_db, tenant_id, ["dpw"])

    outcomes = route(request_id, tenant_id=tenant_id)

    row = _deliveries(configured_db, request_id)["dpw"]
    assert outcomes == {"retry": 1}
    assert row.state == "failed"
    assert row.last_error == "ConnectError"


def test_malformed_webhook_url_marks_dead(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    with unit_of_work(SystemContext("test: a malformed webhook URL"), engine=configured_db) as s:
        from tenants.models import Agency

        agency = s.scalars(select(Agency).where(Agency.tenant_id == tenant_id)).one()
        # The manifest accepts it: it starts with http://.
        agency.webhook_url = "http://agency..example.org/hook"
    request_id = add_request(configured_db, tenant_id, ["dpw"])

    outcomes = route(request_id, tenant_id=tenant_id)

    row = _deliveries(configured_db, request_id)["dpw"]
    assert outcomes == {"dead": 1}
    assert row.state == "dead"
    assert row.last_error == "invalid webhook URL"


def _start_retry_window(engine: Engine, request_id: str, *, ago: timedelta, attempts: int) -> None:
    with unit_of_work(SystemContext("test: a delivery failing for a while"), engine=engine) as s:
        row = s.scalars(select(Delivery).where(Delivery.request_id == request_id)).one()
        row.attempts = attempts
        row.state = "failed"
        row.first_attempt_at = utcnow() - ago


def test_failure_within_window_retries(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    receiver.fail_paths[receiver.path_for(tenant_id, "dpw")] = 500
    request_id = add_request(configured_db, tenant_id, ["dpw"])
    # Eight attempts, the old limit, over most of the window.
    _start_retry_window(configured_db, request_id, ago=timedelta(hours=23), attempts=8)

    outcomes = route(request_id, tenant_id=tenant_id)

    row = _deliveries(configured_db, request_id)["dpw"]
    assert outcomes == {"retry": 1}
    assert row.state == "failed"
    assert row.attempts == 9
    assert row.dead_at is None
    assert len(_route_messages(configured_db, request_id)) == 1


def test_failure_after_window_marks_dead(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    receiver.fail_paths[receiver.path_for(tenant_id, "dpw")] = 500
    request_id = add_request(configured_db, tenant_id, ["dpw"])
    window = timedelta(seconds=routing.RETRY_WINDOW_SECONDS)
    _start_retry_window(configured_db, request_id, ago=window + timedelta(seconds=1), attempts=40)

    outcomes = route(request_id, tenant_id=tenant_id)

    row = _deliveries(configured_db, request_id)["dpw"]
    assert outcomes == {"dead": 1}
    assert row.state == "dead"
    assert row.attempts == 41
    assert row.last_error == "HTTP 500"
    assert row.dead_at is not None


def test_retry_schedule_spans_window(configured_db: Engine, receiver: AgencyReceiver) -> None:
    """Fail every attempt of one delivery on a simulated clock until it is dead."""
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    request_id = add_request(configured_db, tenant_id, ["dpw"])
    ctx = TenantContext(tenant_id=tenant_id, actor="test")
    refused = SendResult(ok=False, transient=True, error="ConnectError")
    started = now = utcnow()
    gaps: list[float] = []
    outcome = "retry"

    while outcome == "retry":
        with unit_of_work(ctx, engine=configured_db) as session:
            (claim,) = routing.claim_deliveries(session, ctx, request_id, now=now)
        with unit_of_work(ctx, engine=configured_db) as session:
            outcome = routing.record_outcome(session, ctx, claim, refused, now=now)
        if outcome == "retry":
            due = as_utc(_deliveries(configured_db, request_id)["dpw"].next_attempt_at)
            gaps.append((due - now).total_seconds())
            now = due

    row = _deliveries(configured_db, request_id)["dpw"]
    assert outcome == "dead"
    assert row.state == "dead"
    assert now - started >= timedelta(seconds=routing.RETRY_WINDOW_SECONDS)
    assert now - started < timedelta(seconds=routing.RETRY_WINDOW_SECONDS + 3600)
    assert max(gaps) <= routing.BACKOFF_MAX_SECONDS
    assert gaps[-1] >= routing.BACKOFF_MAX_SECONDS / 2
    assert row.attempts == len(gaps) + 1
    assert as_utc(row.first_attempt_at) == started
    assert receiver.snapshot() == []


def test_other_tenant_cannot_route(configured_db: Engine, receiver: AgencyReceiver) -> None:
    owner = add_tenant(configured_db, receiver, ["dpw"])
    other = add_tenant(configured_db, receiver, ["dpw"])
    request_id = add_request(configured_db, owner, ["dpw"])

    outcomes = route(request_id, tenant_id=other)

    assert outcomes == {}
    assert receiver.snapshot() == []
    assert _deliveries(configured_db, request_id)["dpw"].state == "pending"


def test_sweep_requeues_abandoned_lease(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    request_id = add_request(configured_db, tenant_id, ["dpw"])
    with unit_of_work(
        SystemContext("test: a lease left by a dead worker"), engine=configured_db
    ) as s:
        row = s.scalars(select(Delivery).where(Delivery.request_id == request_id)).one()
        row.attempts = 1
        row.next_attempt_at = utcnow() - timedelta(seconds=routing.SWEEP_GRACE_SECONDS + 5)

    with unit_of_work(SystemContext("test sweep"), engine=configured_db) as session:
        pairs = routing.overdue_requests(session)

    assert (tenant_id, request_id) in pairs
    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        pending = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.state == "pending", Delivery.request_id == request_id)
        )
    assert pending == 1


def test_undecryptable_payload_marks_dead(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    request_id = add_request(configured_db, tenant_id, ["dpw"])
    with unit_of_work(SystemContext("test: corrupt the ciphertext"), engine=configured_db) as s:
        row = s.get(ServiceRequest, request_id)
        blob = bytearray(row.description_enc)
        blob[-1] ^= 0x01
        row.description_enc = bytes(blob)

    outcomes = route(request_id, tenant_id=tenant_id)

    delivery = _deliveries(configured_db, request_id)["dpw"]
    assert outcomes == {}
    assert delivery.state == "dead"
    assert delivery.last_error.startswith("payload not built: ")
    assert receiver.snapshot() == []


def test_route_batch_queues_each_request(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    request_ids = [add_request(configured_db, tenant_id, ["dpw"]) for _ in range(3)]

    queued = route_batch(request_ids, tenant_id=tenant_id)
    messages = [
        message
        for request_id in request_ids
        for message in _route_messages(configured_db, request_id)
    ]
    for message in messages:
        route(**message.kwargs)

    assert queued == 3
    assert [message.kwargs for message in messages] == [
        {"request_id": request_id, "tenant_id": tenant_id} for request_id in request_ids
    ]
    assert all(message.available_at <= message.created_at for message in messages)
    routed = [item.payload["service_request_id"] for item in receiver.snapshot()]
    assert sorted(routed) == sorted(request_ids)


def test_route_batch_attempts_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1: every attempt is refused at once.
    monkeypatch.setenv("HUB_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    monkeypatch.setattr(tasks, "ROUTE_BATCH_PAUSE_SECONDS", 0.0)
    reset_settings_cache()
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(OperationalError):
            route_batch(["R1", "R2"], tenant_id="tunreachable")
    finally:
        monkeypatch.delenv("HUB_DATABASE_URL")
        reset_settings_cache()
        dispose_engines()

    attempts = [
        entry["attempt"] for entry in logs if entry["event"] == "route_batch_attempt_failed"
    ]
    assert attempts == list(range(1, tasks.ROUTE_BATCH_ATTEMPTS + 1))
    (failed,) = [entry for entry in logs if entry["event"] == "route_batch_failed"]
    assert failed["request_ids"] == ["R1", "R2"]


def test_route_retries_after_database_error(
    configured_db: Engine, receiver: AgencyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route task whose first statement fails on the database (a connection that died with
    a server restart) is retried, and the retry sends the request."""
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    request_id = add_request(configured_db, tenant_id, ["dpw"])
    real_claim = routing.claim_deliveries
    calls = []

    def claim_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(routing, "claim_deliveries", claim_failing_once)

    # Run as a worker would (not called directly), so Celery's retry applies; eagerly, the
    # retry runs at once.
    result = route.apply(args=[request_id], kwargs={"tenant_id": tenant_id})

    assert result.successful(), result.traceback
    assert len(calls) == 2
    assert receiver.count_for(receiver.path_for(tenant_id, "dpw")) == 1
    assert {row.state for row in _deliveries(configured_db, request_id).values()} == {"sent"}
