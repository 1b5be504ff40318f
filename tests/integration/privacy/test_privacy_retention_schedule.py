"""The worker's scheduler queues the retention sweep, which queues and runs each tenant's purge."""

from __future__ import annotations

from sqlalchemy import Engine, delete, select

from hub.core.db import unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.models import ServiceRequest
from hub.worker.schedule import PERIODIC_TASKS, enqueue_due
from privacy.tasks import (
    RETENTION_PURGE_TASK,
    RETENTION_SWEEP_TASK,
    retention_purge,
    retention_sweep,
)

ONE_DAY = 86400


def outbox_rows(engine: Engine, task: str) -> list[OutboxMessage]:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.task == task)).all()
        session.expunge_all()
        return list(rows)


def test_sweep_is_scheduled_daily():
    periodic = {task.name: task for task in PERIODIC_TASKS}
    assert RETENTION_SWEEP_TASK in periodic
    assert periodic[RETENTION_SWEEP_TASK].every_seconds == ONE_DAY
    assert periodic[RETENTION_SWEEP_TASK].queue == "maintenance"


def test_scheduler_enqueues_sweep_once_a_day(configured_db):
    # The PostgreSQL database is shared by the test session, and a worker started by another
    # test may have queued the sweep already; the interval counts from the newest row.
    with unit_of_work(SystemContext("test setup"), engine=configured_db) as session:
        session.execute(delete(OutboxMessage).where(OutboxMessage.task == RETENTION_SWEEP_TASK))
    sweep = [task for task in PERIODIC_TASKS if task.name == RETENTION_SWEEP_TASK]

    first = enqueue_due(sweep, engine=configured_db)
    second = enqueue_due(sweep, engine=configured_db)

    assert first == [RETENTION_SWEEP_TASK]
    assert second == []
    rows = outbox_rows(configured_db, RETENTION_SWEEP_TASK)
    assert len(rows) == 1
    assert rows[0].kwargs == {}


def test_sweep_queues_purge_that_clears_rows(configured_db, tenant, seed_requests, close_expired):
    ids = seed_requests(configured_db, tenant, 2)
    close_expired(configured_db, tenant, ids[0])

    assert retention_sweep() >= 1
    queued = [r for r in outbox_rows(configured_db, RETENTION_PURGE_TASK) if r.tenant_id == tenant]
    assert [r.kwargs for r in queued] == [{"tenant_id": tenant}]

    purged = retention_purge(**queued[0].kwargs)
    assert purged["service_requests"] == 1
    assert retention_purge(**queued[0].kwargs)["service_requests"] == 0
    with unit_of_work(TenantContext(tenant), engine=configured_db) as session:
        assert session.get(ServiceRequest, ids[0]).email_enc is None
        assert session.get(ServiceRequest, ids[1]).email_enc is not None
