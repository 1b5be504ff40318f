"""Gauges read at scrape time from the broker and the database.

Queue depth, outbox age, key ages and audit chain length are state held elsewhere, so they are
read when Prometheus scrapes instead of being updated by the code paths that change them. Each
reading is cached for `max_age` seconds, so a scrape every few seconds from several Prometheus
servers costs one query per interval. A failed reading is logged and reported as
`hub_scrape_collector_up{collector="..."} 0` by the `ScrapeGroup`; the other collectors still
report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from kombu.exceptions import ChannelError
from kombu.transport.virtual import Transport as VirtualTransport
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.core.clock import as_utc, utcnow
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext

log = structlog.get_logger(__name__)

# Seconds a reading stays fresh; Prometheus commonly scrapes every 15 s.
DEFAULT_MAX_AGE = 10.0


@dataclass(frozen=True)
class GaugeSpec:
    """One gauge family a reader fills: its name, help text and label names."""

    name: str
    documentation: str
    labels: Sequence[str] = ()


# A reader returns, per gauge name, a list of (label values, value) samples.
Samples = dict[str, list[tuple[Sequence[str], float]]]
Reader = Callable[[], Samples]


class ScrapeCollector(Collector):
    """Collector that runs `reader` at most once per `max_age` seconds and caches the result."""

    def __init__(
        self,
        name: str,
        specs: Sequence[GaugeSpec],
        reader: Reader,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self.name = name
        self._specs = list(specs)
        self._reader = reader
        self._max_age = max_age
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._samples: Samples = {}
        self._up = False

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < self._max_age:
                return
            try:
                self._samples = self._reader()
                self._up = True
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail on one source
                log.warning("scrape_collector_failed", collector=self.name, error=str(exc))
                self._samples = {}
                self._up = False
            self._read_at = time.monotonic()

    def describe(self) -> Iterable[Metric]:
        # Describing without reading keeps registration free of broker and database calls.
        for spec in self._specs:
            yield GaugeMetricFamily(spec.name, spec.documentation, labels=list(spec.labels))

    def collect(self) -> Iterator[Metric]:
        self._refresh()
        for spec in self._specs:
            family = GaugeMetricFamily(spec.name, spec.documentation, labels=list(spec.labels))
            for label_values, value in self._samples.get(spec.name, []):
                family.add_metric(list(label_values), value)
            yield family

    @property
    def up(self) -> bool:
        return self._up


class ScrapeGroup(Collector):
    """The scrape collectors of a process, plus one `hub_scrape_collector_up` family for all."""

    def __init__(self) -> None:
        self._members: list[ScrapeCollector] = []

    def add(self, collector: ScrapeCollector) -> None:
        self._members.append(collector)

    def describe(self) -> Iterable[Metric]:
        for member in self._members:
            yield from member.describe()

    def collect(self) -> Iterator[Metric]:
        for member in self._members:
            yield from member.collect()
        up = GaugeMetricFamily(
            "hub_scrape_collector_up",
            "1 when the collector's last reading succeeded, 0 when it failed.",
            labels=["collector"],
        )
        for member in self._members:
            up.add_metric([member.name], 1.0 if member.up else 0.0)
        yield up


QUEUE_DEPTH = GaugeSpec(
    "hub_worker_queue_depth", "Messages ready in each Celery queue on the broker.", ["queue"]
)
QUEUE_CONSUMERS = GaugeSpec(
    "hub_worker_queue_consumers", "Consumers attached to each Celery queue.", ["queue"]
)


def queue_depth_reader(connect: Callable[[], Any], queues: Sequence[str]) -> Reader:
    """Build a reader that asks the broker for each queue's message and consumer counts.

    `connect` returns a kombu connection. A passive `queue_declare` reads the counts without
    creating or changing the queue, on RabbitMQ and on kombu's SQLAlchemy transport alike.
    Consumers are read from RabbitMQ only. kombu's virtual transports, such as the embedded
    default's SQLAlchemy one, keep no record of them and report 0 while a worker consumes, so
    the alert on zero consumers would fire on running workers.
    """

    def read() -> Samples:
        depth: list[tuple[Sequence[str], float]] = []
        consumers: list[tuple[Sequence[str], float]] = []
        with connect() as connection:
            counts_consumers = not isinstance(connection.transport, VirtualTransport)
            channel = connection.channel()
            for queue in queues:
                try:
                    _name, messages, count = channel.queue_declare(queue=queue, passive=True)
                except ChannelError:
                    # The queue does not exist until a worker declares it; RabbitMQ closes the
                    # channel on this error, so the next queue gets a fresh one.
                    log.info("queue_not_declared", queue=queue)
                    channel = connection.channel()
                    continue
                depth.append(((queue,), float(messages)))
                if counts_consumers:
                    consumers.append(((queue,), float(count or 0)))
            channel.close()
        return {QUEUE_DEPTH.name: depth, QUEUE_CONSUMERS.name: consumers}

    return read


OUTBOX_PENDING = GaugeSpec(
    "hub_outbox_pending",
    "Outbox rows due for publishing and not yet published to the broker (rows scheduled for "
    "later, such as delivery retries, are left out).",
)
OUTBOX_OLDEST = GaugeSpec(
    "hub_outbox_oldest_pending_seconds",
    "Seconds the oldest due, unpublished outbox row has waited since it became due (0 when "
    "none waits).",
)


def outbox_reader(engine: Any = None) -> Reader:
    """Build a reader for the due outbox backlog and how long its oldest row has waited."""
    from hub.core.outbox import due_backlog

    def read() -> Samples:
        now = utcnow()
        scope = SystemContext("metrics collector")
        with unit_of_work(scope, engine=engine, write=False) as session:
            count, oldest = due_backlog(session, now)
        return {
            OUTBOX_PENDING.name: [((), float(count))],
            OUTBOX_OLDEST.name: [((), age_seconds(oldest, now))],
        }

    return read


WORKER_STARTS = GaugeSpec(
    "hub_worker_recent_starts",
    "`hub worker` processes started on each host in the last 10 minutes, from the database.",
    ["host"],
)


def worker_starts_reader(engine: Any = None) -> Reader:
    """Build a reader for the worker starts of the last 10 minutes per host."""
    from hub.core.worker_starts import recent_starts

    def read() -> Samples:
        scope = SystemContext("metrics collector")
        with unit_of_work(scope, engine=engine, write=False) as session:
            starts = recent_starts(session)
        return {WORKER_STARTS.name: [((host,), float(count)) for host, count in starts.items()]}

    return read


def age_seconds(moment: datetime | None, now: datetime | None = None) -> float:
    """Return seconds since `moment`, or 0 for None; a naive `moment` is UTC (SQLite)."""
    if moment is None:
        return 0.0
    return max(((now or utcnow()) - as_utc(moment)).total_seconds(), 0.0)
