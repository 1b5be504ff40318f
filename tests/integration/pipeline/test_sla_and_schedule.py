"""The SLA check and the periodic scheduler against a real database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pipeline_support import add_request, add_tenant
from sqlalchemy import Engine, event, select

from hub.cli.demo.receiver import AgencyReceiver
from hub.core.clock import utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.tenancy import SystemContext
from hub.requests.models import ServiceRequest, StatusEvent
from hub.requests.tasks import check_sla
from hub.worker.schedule import PeriodicTask, enqueue_due


def test_sla_breach_marked_once(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    late = add_request(configured_db, tenant_id, ["dpw"], expected_at=utcnow() - timedelta(hours=2))
    on_time = add_request(
        configured_db, tenant_id, ["dpw"], expected_at=utcnow() + timedelta(hours=2)
    )

    first = check_sla()
    second = check_sla()

    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        late_row = session.get(ServiceRequest, late)
        on_time_row = session.get(ServiceRequest, on_time)
        events = session.scalars(
            select(StatusEvent).where(StatusEvent.request_id.in_([late, on_time]))
        ).all()
    assert first >= 1
    assert second == 0
    assert late_row.sla_breached_at is not None
    assert on_time_row.sla_breached_at is None
    assert [(e.request_id, e.channel) for e in events] == [(late, "sla_escalation")]


def test_sla_skips_closed_requests(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    closed = add_request(
        configured_db, tenant_id, ["dpw"], expected_at=utcnow() - timedelta(hours=2)
    )
    with unit_of_work(SystemContext("test: close"), engine=configured_db) as session:
        session.get(ServiceRequest, closed).status = "closed"

    check_sla()

    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        assert session.get(ServiceRequest, closed).sla_breached_at is None


def test_scheduler_enqueues_once_per_interval(configured_db: Engine) -> None:
    task = PeriodicTask("hub.test.periodic_probe", every_seconds=3600)

    first = enqueue_due([task], engine=configured_db)
    second = enqueue_due([task], engine=configured_db)

    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.task == task.name)).all()
    assert first == [task.name]
    assert second == []
    assert len(rows) == 1
    assert rows[0].queue == "maintenance"


def test_scheduler_outbox_read_uses_index(pg_url: str) -> None:
    # The outbox keeps every published row, so a read of it that cannot use an index reads a
    # table that grows with every request, on every tick of every worker. With sequential
    # scans disabled, PostgreSQL still plans one only when no index serves the statement.
    engine = get_engine(pg_url)
    statements: list[tuple[str, Any]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _executemany) -> None:
        if "FROM outbox" in statement and statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        enqueue_due([PeriodicTask("hub.test.indexed_probe", every_seconds=3600)], engine=engine)
    finally:
        event.remove(engine, "before_cursor_execute", capture)

    assert statements
    with engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in statements:
            plan = "\n".join(
                row[0] for row in connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            )
            assert "Seq Scan on outbox" not in plan, plan
        connection.rollback()
