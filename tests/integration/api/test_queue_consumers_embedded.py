"""Queue readings from the embedded broker (kombu's SQLAlchemy transport)."""

from __future__ import annotations

from pathlib import Path

from kombu import Connection, Exchange, Queue

from hub.core.collectors import QUEUE_CONSUMERS, QUEUE_DEPTH, queue_depth_reader


def test_embedded_broker_reports_no_consumers(tmp_path: Path) -> None:
    """The transport keeps no record of consumers, so the reading leaves them out instead of
    reporting 0 for queues that a worker consumes."""
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    queue = Queue("intake", Exchange("intake", type="direct"), routing_key="intake")
    with Connection(url) as connection:
        producer = connection.Producer()
        queue(connection.default_channel).declare()
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key="intake")

    samples = queue_depth_reader(lambda: Connection(url), ["intake"])()

    assert samples[QUEUE_DEPTH.name] == [(("intake",), 1.0)]
    assert samples[QUEUE_CONSUMERS.name] == []
