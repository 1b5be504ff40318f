"""Periodic tasks, enqueued by a small scheduler thread inside every `hub worker`.

The hub runs no separate `celery beat`: the embedded default has one process to spare, and the
distributed deployment then needs nothing beyond its workers. Each tick, the thread enqueues
every periodic task whose last outbox row is older than its interval. Several workers may tick
at once. On PostgreSQL a transaction-scoped advisory lock per task lets one of them enqueue, and
on SQLite the immediate write transaction serializes them. The tasks are idempotent anyway, so an
extra run costs only its work.

Features add their periodic tasks to `PERIODIC_TASKS` with a small edit.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import func, select, text

from hub.core.clock import as_utc, utcnow
from hub.core.db import is_postgres, unit_of_work
from hub.core.outbox import OutboxMessage, enqueue
from hub.core.tasks import QUEUE_MAINTENANCE
from hub.core.tenancy import SystemContext

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PeriodicTask:
    """A task without arguments enqueued every `every_seconds` seconds."""

    name: str
    every_seconds: float
    queue: str = QUEUE_MAINTENANCE


PERIODIC_TASKS: list[PeriodicTask] = [
    PeriodicTask("hub.requests.check_sla", every_seconds=60),
    PeriodicTask("hub.requests.sweep_deliveries", every_seconds=120),
    # Queues `privacy.retention_purge` for every active tenant.
    PeriodicTask("privacy.retention_sweep", every_seconds=86400),
]


def enqueue_due(tasks: list[PeriodicTask] | None = None, *, engine: object = None) -> list[str]:
    """Enqueue every task in `tasks` that has not been enqueued within its interval."""
    enqueued: list[str] = []
    now = utcnow()
    for task in tasks if tasks is not None else PERIODIC_TASKS:
        with unit_of_work(SystemContext("periodic scheduler"), engine=engine) as session:
            if is_postgres(session):
                key = zlib.crc32(task.name.encode("utf-8"))
                locked = session.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}
                )
                if not locked:
                    continue
            # Periodic tasks are enqueued without a tenant, and this condition lets the
            # database use the partial index `ix_outbox_untenanted_task`.
            last = session.scalar(
                select(func.max(OutboxMessage.created_at)).where(
                    OutboxMessage.task == task.name, OutboxMessage.tenant_id.is_(None)
                )
            )
            if last is not None and as_utc(last) > now - timedelta(seconds=task.every_seconds):
                continue
            enqueue(session, task.name, queue=task.queue, tenant_id=None)
            enqueued.append(task.name)
    return enqueued


class Scheduler:
    """Thread that calls `enqueue_due` every `tick_seconds` until stopped."""

    def __init__(self, *, tick_seconds: float = 15.0, engine: object = None) -> None:
        self._tick = tick_seconds
        self._engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="periodic-scheduler", daemon=True)
        self._thread.start()
        log.info("scheduler_started", tick_seconds=self._tick)

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        log.info("scheduler_stopped")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                names = enqueue_due(engine=self._engine)
                if names:
                    log.info("periodic_tasks_enqueued", tasks=names)
            except Exception as exc:  # noqa: BLE001 - the scheduler must outlive database outages
                log.warning("scheduler_tick_failed", error=str(exc))
            self._stop.wait(self._tick)
