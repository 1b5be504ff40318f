"""Per-process runtime of the API: the outbox relay thread and its publisher, and the overflow
live board that evaluates the overflow and disaster switches every second."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import event

from failover import board as live_board
from hub.core.db import HubSession, get_engine
from hub.core.outbox import OutboxItem, OutboxRelay
from hub.core.settings import Settings

log = structlog.get_logger(__name__)


def broker_probe() -> None:
    """Open and close a broker connection; raise when the broker does not respond within 2 s."""
    from hub.worker.app import celery_app

    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def celery_publisher(message: OutboxItem) -> None:
    """Publish one outbox row as a Celery task (blocks until the broker confirms on RabbitMQ)."""
    from hub.worker.app import celery_app

    celery_app.send_task(message.task, kwargs=message.kwargs, queue=message.queue)


@dataclass
class Runtime:
    relay: OutboxRelay | None
    board: live_board.LiveBoard | None = None

    def stop(self) -> None:
        if self.board is not None:
            live_board.stop_board(self.board)
        if self.relay is not None:
            self.relay.stop()


_active: Runtime | None = None


def start(settings: Settings, *, start_relay: bool = True, start_board: bool = True) -> Runtime:
    global _active
    board = None
    if start_board:
        board = live_board.start_board(get_engine(settings=settings))
    relay = None
    if start_relay:
        relay = OutboxRelay(
            celery_publisher,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            probe=broker_probe,
        )
        relay.start()
    _active = Runtime(relay=relay, board=board)
    return _active


def active_relay() -> OutboxRelay | None:
    return _active.relay if _active else None


@event.listens_for(HubSession, "after_commit")
def _wake_relay(session: HubSession) -> None:
    # A commit that added outbox rows wakes the relay, so tasks start without waiting a poll.
    if session.info.pop("outbox_added", False) and _active and _active.relay:
        _active.relay.notify()
