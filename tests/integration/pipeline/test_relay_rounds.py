"""The outbox relay's rounds under a stream of commits, on SQLite."""

from __future__ import annotations

import time

from hub.core.db import get_engine, unit_of_work
from hub.core.outbox import OutboxMessage, OutboxRelay, enqueue
from hub.core.tenancy import SystemContext

MIN_ROUND = 1.0


class Broker:
    def __init__(self) -> None:
        self.received: list[tuple[int, float]] = []

    def publish(self, message: OutboxMessage) -> None:
        self.received.append((message.id, time.monotonic()))

    def ids(self) -> list[int]:
        return [message_id for message_id, _at in self.received]


def _add_message(engine) -> int:
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        message = enqueue(session, "test.task", queue="intake", tenant_id=None, item_id="x1")
        session.flush()
        return message.id


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_relay_rounds_gather_rows(sqlite_url):
    engine = get_engine(sqlite_url)
    broker = Broker()
    relay = OutboxRelay(
        broker.publish, poll_seconds=0.01, engine=engine, min_round_seconds=MIN_ROUND
    )
    relay.start()
    try:
        first = _add_message(engine)
        _wait_for(lambda: first in broker.ids())
        second = _add_message(engine)
        third = _add_message(engine)
        _wait_for(lambda: third in broker.ids())
    finally:
        relay.stop()

    assert broker.ids() == [first, second, third]
    (_, first_at), (_, second_at), (_, third_at) = broker.received
    # The relay polls every 0.01 s, but after publishing the first row it waited the minimum
    # round time, so the two rows that came meanwhile went out together in the next round.
    assert second_at - first_at >= MIN_ROUND * 0.9
    assert third_at - second_at < MIN_ROUND * 0.9
