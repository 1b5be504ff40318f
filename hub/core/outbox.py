"""Transactional outbox: tasks are written as rows in the business transaction, then relayed.

A request is acknowledged only after its row and its outbox row commit together, so a broker
outage delays work but does not lose it. The relay publishes rows in id order and marks each
one published after `send_task` returns, which on RabbitMQ waits for the publisher confirm. A
crash between the two republishes the row, so every task is idempotent (state guards on the
rows it touches).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    String,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from hub.core.clock import utcnow
from hub.core.db import Base, unit_of_work
from hub.core.errors import InvalidInput
from hub.core.logging import RepeatLimiter
from hub.core.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISH_FAILURES, OUTBOX_PUBLISHED
from hub.core.tenancy import SystemContext

log = structlog.get_logger(__name__)
# While the broker or the database is down, each relay round fails the same way, several times
# a second in every process: log one line per event and error class per 10 s.
_repeat_log = RepeatLimiter(10.0)

# Task arguments are identifiers only, never personal data: short tokens of letters, digits and
# `_.:-`. An email address, a phone number with `+` or any text with spaces fails this check.
_ID_VALUE = re.compile(r"^[A-Za-z0-9_.:\-]{1,80}$")


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(120))
    queue: Mapped[str] = mapped_column(String(64))
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_outbox_pending", "published_at", "id"),
        # For the periodic scheduler's look-up of a task's latest row. Published rows are
        # kept, so without it that look-up reads the whole table. Only rows without a tenant
        # (maintenance tasks) are indexed, so intake's inserts do not maintain it.
        Index(
            "ix_outbox_untenanted_task",
            "task",
            "created_at",
            postgresql_where=text("tenant_id IS NULL"),
            sqlite_where=text("tenant_id IS NULL"),
        ),
    )


_INSERT_MESSAGE = insert(OutboxMessage.__table__)


def _check_id_value(key: str, value: Any) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str) and _ID_VALUE.match(value):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_id_value(key, item)
        return
    raise InvalidInput(
        f"task argument {key!r} is not an identifier; tasks take ids only, never personal data"
    )


def enqueue(
    session: Session,
    task: str,
    *,
    queue: str,
    tenant_id: str | None,
    delay_seconds: float = 0,
    **kwargs: Any,
) -> OutboxMessage:
    """Add a task to the outbox inside the caller's transaction; it is published after commit."""
    message = OutboxMessage(**_message_values(task, queue, tenant_id, delay_seconds, kwargs))
    session.add(message)
    session.info["outbox_added"] = True
    return message


def enqueue_now(
    session: Session, task: str, *, queue: str, tenant_id: str, arguments: list[dict[str, Any]]
) -> None:
    """Insert one task per `arguments` item into the outbox at once, as one statement. The tasks
    are published after commit.

    For hot paths that write their other rows with statements too: `enqueue` adds an ORM
    instance, and flushing one costs more CPU than the statement.
    """
    values = [_message_values(task, queue, tenant_id, 0, kwargs) for kwargs in arguments]
    session.execute(_INSERT_MESSAGE, values)
    session.info["outbox_added"] = True


def _message_values(
    task: str, queue: str, tenant_id: str | None, delay_seconds: float, kwargs: dict[str, Any]
) -> dict[str, Any]:
    for key, value in kwargs.items():
        _check_id_value(key, value)
    if tenant_id is not None:
        _check_id_value("tenant_id", tenant_id)
        kwargs["tenant_id"] = tenant_id
    now = utcnow()
    return {
        "tenant_id": tenant_id,
        "task": task,
        "queue": queue,
        "kwargs": kwargs,
        "created_at": now,
        "available_at": now + timedelta(seconds=delay_seconds),
    }


class OutboxItem(Protocol):
    """The fields of an outbox row that a publisher reads."""

    id: int
    task: str
    queue: str
    kwargs: dict[str, Any]


Publisher = Callable[[OutboxItem], None]


# Tasks whose due messages the relay may publish as one: task name to the list argument whose
# lists it joins. A merged message is published where its first row is in the id order.
_MERGEABLE: dict[str, str] = {}
# Items of the joined list per merged message.
MAX_MERGED_ITEMS = 500


def mergeable(task: str, list_argument: str) -> None:
    """Let the relay publish the due messages of `task` that differ only in `list_argument` as
    one message with their lists joined, for tasks that do the same for each item of the list.

    With the embedded broker each message costs the API process a broker transaction: intake
    writes one message per batch, and under load a relay round finds several.
    """
    _MERGEABLE[task] = list_argument


@dataclass(frozen=True)
class _Message:
    id: int
    task: str
    queue: str
    kwargs: dict[str, Any]


def _merged(rows: Sequence[OutboxItem]) -> list[tuple[list[int], OutboxItem]]:
    """Return the messages to publish, each with the ids of the rows it carries, in the order
    of their first rows."""
    messages: list[tuple[list[int], OutboxItem]] = []
    # Where the message that the next row of each group joins is in `messages`.
    open_groups: dict[tuple[str, str, str], int] = {}
    for row in rows:
        argument = _MERGEABLE.get(row.task)
        items = row.kwargs.get(argument) if argument else None
        if argument is None or not isinstance(items, list):
            messages.append(([row.id], row))
            continue
        others = {key: value for key, value in row.kwargs.items() if key != argument}
        group = (row.task, row.queue, json.dumps(others, sort_keys=True))
        index = open_groups.get(group)
        if index is not None:
            ids, message = messages[index]
            joined = message.kwargs[argument]
            if len(joined) + len(items) <= MAX_MERGED_ITEMS:
                ids.append(row.id)
                joined.extend(items)
                continue
        open_groups[group] = len(messages)
        kwargs = {**others, argument: list(items)}
        messages.append(([row.id], _Message(row.id, row.task, row.queue, kwargs)))
    return messages


def relay_once(publish: Publisher, *, batch_size: int = 500, engine: Any = None) -> int:
    """Publish up to `batch_size` due messages; return how many were published.

    Rows are locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several relays (one per API
    or worker process) share the backlog without publishing a row twice in the normal case.
    Rows of a `mergeable` task go out together as one message. When publishing fails the rows
    published so far stay marked and the rest wait.
    """
    published: list[int] = []
    with unit_of_work(SystemContext("outbox relay"), engine=engine) as session:
        # Rows, not ORM instances, and one UPDATE for the batch: the relay runs in every API
        # process beside the requests, and flushing an instance per message cost them CPU.
        connection = session.connection()
        rows = connection.execute(_DUE_MESSAGES, {"now": utcnow(), "limit": batch_size}).all()
        for ids, message in _merged(rows):
            try:
                publish(message)
            except Exception as exc:  # noqa: BLE001 - any broker error keeps the rows for later
                connection.execute(_COUNT_ATTEMPT, [{"message_id": row_id} for row_id in ids])
                OUTBOX_PUBLISH_FAILURES.inc()
                _repeat_log.log(
                    log.warning,
                    "outbox_publish_failed",
                    key=type(exc).__name__,
                    outbox_id=message.id,
                    task=message.task,
                    error=str(exc),
                )
                break
            OUTBOX_PUBLISHED.labels(queue=message.queue).inc(len(ids))
            published.extend(ids)
        if published:
            connection.execute(_MARK_PUBLISHED, {"now": utcnow(), "ids": published})
    return len(published)


_TABLE = OutboxMessage.__table__
# PostgreSQL locks the rows with SKIP LOCKED, and SQLite ignores the clause.
_DUE_MESSAGES = (
    select(_TABLE.c.id, _TABLE.c.task, _TABLE.c.queue, _TABLE.c.kwargs)
    .where(_TABLE.c.published_at.is_(None), _TABLE.c.available_at <= bindparam("now"))
    .order_by(_TABLE.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_COUNT_ATTEMPT = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("message_id"))
    .values(attempts=_TABLE.c.attempts + 1)
)
_MARK_PUBLISHED = (
    update(_TABLE)
    .where(_TABLE.c.id.in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("now"))
)


def due_backlog(session: Session, now: datetime | None = None) -> tuple[int, datetime | None]:
    """Return how many unpublished rows are due (`available_at` at or before `now`) and the
    earliest `available_at` among them.

    Rows scheduled for later, such as delivery retries, are left out: they wait on purpose, not
    for the broker.
    """
    count, oldest = session.execute(
        select(func.count(), func.min(OutboxMessage.available_at)).where(
            OutboxMessage.published_at.is_(None), OutboxMessage.available_at <= (now or utcnow())
        )
    ).one()
    return int(count or 0), oldest


@dataclass(frozen=True)
class BacklogEntry:
    """Unpublished outbox rows of one task on one queue: those due now, the earliest time one
    of them became due (None when none is due), and those scheduled for later."""

    queue: str
    task: str
    due: int
    oldest_due_at: datetime | None
    scheduled: int


def backlog_by_task(session: Session, now: datetime | None = None) -> list[BacklogEntry]:
    """Return the unpublished rows per queue and task, in one read-only query.

    A row is due when its `available_at` is at or before `now`, as `due_backlog` counts them;
    rows scheduled for later (delivery retries) are counted apart.
    """
    now = now or utcnow()
    is_due = OutboxMessage.available_at <= now
    due = func.count().filter(is_due)
    oldest = func.min(OutboxMessage.available_at).filter(is_due)
    scheduled = func.count().filter(~is_due)
    rows = session.execute(
        select(OutboxMessage.queue, OutboxMessage.task, due, oldest, scheduled)
        .where(OutboxMessage.published_at.is_(None))
        .group_by(OutboxMessage.queue, OutboxMessage.task)
        .order_by(OutboxMessage.queue, OutboxMessage.task)
    ).all()
    return [
        BacklogEntry(queue, task, int(count or 0), first, int(later or 0))
        for queue, task, count, first, later in rows
    ]


def backlog(engine: Any = None) -> int:
    """Return how many unpublished outbox rows are due, as `due_backlog` counts them."""
    with unit_of_work(SystemContext("outbox backlog"), engine=engine, write=False) as session:
        count, _oldest = due_backlog(session)
    return count


# Minimum seconds between the starts of two relay rounds. Under load every commit wakes the
# relay, and a round costs a transaction even when it finds no rows (another process's relay
# took them). With the wait the rows of several commits go out together, and a commit's rows
# wait at most this long. Intake's routing rows of one round go out as one message, so fewer
# and larger rounds cost less per POST. The load was one API process, 16 clients and the
# embedded broker, in six pairs of runs. There 0.25 s instead of 0.05 s cut the CPU time per
# POST (API process and PostgreSQL) from 1.97 to 2.48 ms to 1.42 to 2.04 ms.
MIN_ROUND_SECONDS = 0.25


class OutboxRelay:
    """Background thread that drains the outbox, woken early by `notify()` after a commit."""

    def __init__(
        self,
        publish: Publisher,
        *,
        batch_size: int = 500,
        poll_seconds: float = 0.5,
        engine: Any = None,
        probe: Callable[[], None] | None = None,
        probe_seconds: float = 5.0,
        min_round_seconds: float = MIN_ROUND_SECONDS,
    ) -> None:
        self._publish = publish
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._engine = engine
        self._probe = probe
        self._probe_seconds = probe_seconds
        self._min_round_seconds = min_round_seconds
        self._last_probe = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Whether the last outbox query succeeded, and whether the broker took the last message
        # (or passed the last probe). Readiness and degraded intake read `healthy`.
        self.database_ok = True
        self.broker_ok = True

    @property
    def healthy(self) -> bool:
        return self.database_ok and self.broker_ok

    def _publish_tracked(self, message: OutboxItem) -> None:
        try:
            self._publish(message)
        except Exception:
            if self.broker_ok:
                log.warning("outbox_broker_unavailable", outbox_id=message.id)
            self.broker_ok = False
            raise
        if not self.broker_ok:
            log.info("outbox_broker_available", outbox_id=message.id)
        self.broker_ok = True

    def _check_broker(self) -> None:
        """Probe the broker when idle, so an outage shows before a message fails to publish."""
        now = time.monotonic()
        if self._probe is None or now - self._last_probe < self._probe_seconds:
            return
        self._last_probe = now
        try:
            self._probe()
        except Exception as exc:  # noqa: BLE001 - any probe failure means the broker is down
            if self.broker_ok:
                log.warning("outbox_broker_probe_failed", error=type(exc).__name__)
            self.broker_ok = False
            return
        self.broker_ok = True

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()
        log.info("outbox_relay_started")

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        log.info("outbox_relay_stopped")

    def _run(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                count = relay_once(
                    self._publish_tracked, batch_size=self._batch_size, engine=self._engine
                )
                self.database_ok = True
            except Exception as exc:  # noqa: BLE001 - the relay must survive database outages
                _repeat_log.log(
                    log.warning, "outbox_relay_round_failed", key=type(exc).__name__, error=str(exc)
                )
                self.database_ok = False
                count = 0
            if count == 0:
                self._check_broker()
            rounds += 1
            if rounds % 20 == 0:
                try:
                    OUTBOX_BACKLOG.set(backlog(self._engine))
                except Exception as exc:  # noqa: BLE001
                    log.warning("outbox_backlog_read_failed", error=str(exc))
            if count < self._batch_size:
                # Let the rows of the next commits gather.
                self._stop.wait(started + self._min_round_seconds - time.monotonic())
                self._wake.wait(self._poll_seconds)
                self._wake.clear()
