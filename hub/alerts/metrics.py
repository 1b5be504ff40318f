"""Prometheus metrics of alerts and their deliveries. Labels are bounded: kind, channel,
outcome and final state.

These count work in the process that does it, which for deliveries is always a worker. An
alert's send starts in the process of the API or of the CLI, and a CLI process exits before any
scrape, so the alerts sent and their deliveries are read from the database at scrape time
instead (`hub.api.observability.alert_totals_reader`).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from hub.core.metrics import LATENCY_BUCKETS

DELIVERIES = Counter(
    "hub_alerts_delivery_attempts_total",
    "Delivery attempts by channel and outcome: sent, retry (failed, retried later), failed "
    "(failed for good, including the last retry) and dropped.",
    ["channel", "outcome"],
)
ALERTS_FINISHED = Counter(
    "hub_alerts_finished_total",
    "Alerts (per tenant row) whose fan-out ended with no delivery pending, by kind and final "
    "state (sent, partly_failed or failed).",
    ["kind", "state"],
)
DELIVERY_SECONDS = Histogram(
    "hub_alerts_delivery_seconds",
    "Time of one delivery attempt to the channel provider, in seconds.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
)
TARGETING_SECONDS = Histogram(
    "hub_alerts_targeting_seconds",
    "Time to find the subscribers in an alert's area, in seconds, for previews and sends made "
    "through the API (the CLI's are not counted).",
    buckets=LATENCY_BUCKETS,
)
