"""The outbox relay's health signal and its rounds, on SQLite with a publisher that fails on
demand."""

import time

from hub.core.db import get_engine, unit_of_work
from hub.core.outbox import OutboxMessage, OutboxRelay, enqueue
from hub.core.tenancy import SystemContext


class Broker:
    def __init__(self):
        self.up = True
        self.received = []
        self.published_at = []

    def publish(self, message: OutboxMessage) -> None:
        if not self.up:
            raise ConnectionError("broker down")
        self.received.append(message.id)
        self.published_at.append(time.monotonic())

    def probe(self) -> None:
        if not self.up:
            raise ConnectionError("broker down")


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def add_message(engine) -> int:
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        message = enqueue(session, "test.task", queue="intake", tenant_id=None, item_id="x1")
        session.flush()
        return message.id


def test_relay_reports_broker_down_and_catches_up(sqlite_url):
    engine = get_engine(sqlite_url)
    broker = Broker()
    relay = OutboxRelay(
        broker.publish, poll_seconds=0.05, engine=engine, probe=broker.probe, probe_seconds=0.1
    )
    relay.start()
    try:
        first = add_message(engine)
        wait_until(lambda: first in broker.received)
        assert relay.healthy is True

        broker.up = False
        second = add_message(engine)
        wait_until(lambda: not relay.broker_ok)
        assert relay.healthy is False
        assert relay.database_ok is True
        assert second not in broker.received

        broker.up = True
        wait_until(lambda: second in broker.received)
        wait_until(lambda: relay.healthy)
        assert broker.received.count(second) == 1
    finally:
        relay.stop()


def test_idle_relay_probe_detects_outage(sqlite_url):
    engine = get_engine(sqlite_url)
    broker = Broker()
    relay = OutboxRelay(
        broker.publish, poll_seconds=0.05, engine=engine, probe=broker.probe, probe_seconds=0.1
    )
    relay.start()
    try:
        broker.up = False
        wait_until(lambda: not relay.broker_ok)
        broker.up = True
        wait_until(lambda: relay.broker_ok)
    finally:
        relay.stop()


def test_relay_rounds_gather_rows(sqlite_url):
    engine = get_engine(sqlite_url)
    broker = Broker()
    min_round = 1.0
    relay = OutboxRelay(
        broker.publish, poll_seconds=0.01, engine=engine, min_round_seconds=min_round
    )
    relay.start()
    try:
        first = add_message(engine)
        wait_until(lambda: first in broker.received)
        second = add_message(engine)
        third = add_message(engine)
        wait_until(lambda: third in broker.received)
    finally:
        relay.stop()

    assert broker.received == [first, second, third]
    first_at, second_at, third_at = broker.published_at
    # The relay polls every 0.01 s, but after publishing the first row it waited the minimum
    # round time, so the two rows that came meanwhile went out together in the next round.
    assert second_at - first_at >= min_round * 0.9
    assert third_at - second_at < min_round * 0.9
