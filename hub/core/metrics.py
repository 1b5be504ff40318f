"""Prometheus metrics shared by the API and the workers.

Names follow `hub_<area>_<thing>_{total,seconds}`; labels are bounded (tenant ids, endpoint
route templates, queue and channel names, outcomes) and never carry personal data.

When `PROMETHEUS_MULTIPROC_DIR` is set (API with several processes, Celery workers), values are
written to files there and `/metrics` aggregates them with `MultiProcessCollector`.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

# Latency buckets in seconds, from 1 ms to 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "hub_http_requests_total",
    "HTTP requests answered, by route template, method, status class and tenant.",
    ["route", "method", "status", "tenant"],
)
HTTP_LATENCY = Histogram(
    "hub_http_request_seconds",
    "HTTP request latency by route template, method and tenant.",
    ["route", "method", "tenant"],
    buckets=LATENCY_BUCKETS,
)
OUTBOX_PUBLISHED = Counter(
    "hub_outbox_published_total", "Outbox messages published to the broker, by queue.", ["queue"]
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "hub_outbox_publish_failures_total", "Failed attempts to publish outbox messages."
)
OUTBOX_BACKLOG = Gauge(
    "hub_outbox_backlog",
    "Outbox messages due and not yet published, as last seen by the relay.",
    multiprocess_mode="max",
)
TASKS = Counter(
    "hub_worker_tasks_total",
    "Celery tasks finished, by task name and outcome.",
    ["task", "outcome"],
)
TASK_LATENCY = Histogram(
    "hub_worker_task_seconds",
    "Celery task run time by task name.",
    ["task"],
    buckets=LATENCY_BUCKETS,
)


# Collectors read at scrape time (queue depth, key ages, audit chain length), registered by the
# composition roots. They are rendered after the process metrics, once per scrape.
_scrape_registry = CollectorRegistry(auto_describe=False)


def register_scrape_collector(collector: Collector) -> None:
    """Add a collector whose families are read when `/metrics` is scraped."""
    _scrape_registry.register(collector)


def unregister_scrape_collector(collector: Collector) -> None:
    _scrape_registry.unregister(collector)


def process_registry() -> CollectorRegistry:
    """Return the registry of process metrics, aggregated over processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def render_latest() -> tuple[bytes, str]:
    """Return the exposition text for `/metrics` and its content type."""
    body = generate_latest(process_registry()) + generate_latest(_scrape_registry)
    return body, CONTENT_TYPE_LATEST
