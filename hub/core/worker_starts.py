"""A row per `hub worker` start, so restarts can be counted without catching a worker down.

A worker that a process supervisor restarts within seconds is gone for less than a scrape
interval, so a gauge read from the broker (consumers) or from the worker's own exporter can
miss every restart. Each start is written here instead, and the API's `/metrics` reports the
starts of the last 10 minutes per host (`hub_worker_recent_starts`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import BigInteger, DateTime, Engine, Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hub.core.clock import utcnow
from hub.core.db import Base, unit_of_work
from hub.core.tenancy import SystemContext

# Window of `hub_worker_recent_starts`; HubWorkerCrashLoop compares it with its threshold.
RECENT_WINDOW = timedelta(minutes=10)
# Rows older than this are deleted when a worker starts.
RETENTION = timedelta(days=1)


class WorkerStart(Base):
    __tablename__ = "worker_starts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # The machine's host name and the Celery node name (`hub-PID@host` by default).
    host: Mapped[str] = mapped_column(String(255))
    node: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


def record_start(host: str, node: str, pid: int, *, engine: Engine | None = None) -> None:
    """Insert this worker's start and delete the starts older than `RETENTION`."""
    now = utcnow()
    with unit_of_work(SystemContext("worker start"), engine=engine) as session:
        session.execute(delete(WorkerStart).where(WorkerStart.started_at < now - RETENTION))
        session.add(WorkerStart(host=host[:255], node=node[:255], pid=pid, started_at=now))


def recent_starts(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Return, per host, how many workers started in the last `RECENT_WINDOW`."""
    since = (now or utcnow()) - RECENT_WINDOW
    rows = session.execute(
        select(WorkerStart.host, func.count())
        .where(WorkerStart.started_at >= since)
        .group_by(WorkerStart.host)
    ).all()
    return {host: int(count) for host, count in rows}
