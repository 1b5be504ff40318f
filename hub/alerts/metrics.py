"""Prometheus metrics of alerts and their deliveries. Labels are bounded: kind, message type,
channel, outcome and final state."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from hub.core.metrics import LATENCY_BUCKETS

ALERTS_SENT = Counter(
    "hub_alerts_sent_total",
    "Alerts (per tenant row) whose fan-out started, by kind and CAP msgType.",
    ["kind", "msg_type"],
)
DELIVERIES_CREATED = Counter(
    "hub_alerts_fanout_deliveries_total",
    "Delivery rows created by fan-out, by kind (alert or notice).",
    ["kind"],
)
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
    "Time to find the subscribers in an alert's area, in seconds.",
    buckets=LATENCY_BUCKETS,
)
