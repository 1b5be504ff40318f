"""Queue depth read from RabbitMQ at scrape time, including a queue no worker has declared."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange, Queue

from hub.core.collectors import QUEUE_CONSUMERS, QUEUE_DEPTH, ScrapeCollector, queue_depth_reader

pytestmark = pytest.mark.rabbitmq


def test_queue_depth_counts_ready_messages(rabbitmq_url: str) -> None:
    name = f"obs-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, auto_delete=False)
    # With publisher confirms each publish returns once the broker has queued the message, so
    # the count below cannot run ahead of the messages.
    with Connection(rabbitmq_url, transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer()
        queue(connection.default_channel).declare()
        for index in range(3):
            producer.publish({"n": index}, exchange=queue.exchange, routing_key=name)
    try:
        reader = queue_depth_reader(lambda: Connection(rabbitmq_url), [name])

        samples = reader()

        assert samples[QUEUE_DEPTH.name] == [((name,), 3.0)]
        assert samples[QUEUE_CONSUMERS.name] == [((name,), 0.0)]
    finally:
        with Connection(rabbitmq_url) as connection:
            queue(connection.default_channel).delete()


def test_queue_depth_skips_undeclared_queue(rabbitmq_url: str) -> None:
    missing = f"obs-missing-{uuid.uuid4().hex[:8]}"
    reader = queue_depth_reader(lambda: Connection(rabbitmq_url), [missing])
    collector = ScrapeCollector("broker_queues", [QUEUE_DEPTH], reader)

    families = {family.name: family for family in collector.collect()}

    assert collector.up is True
    assert families["hub_worker_queue_depth"].samples == []
