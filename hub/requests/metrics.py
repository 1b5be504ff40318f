"""Prometheus metrics of the request lifecycle.

Labels are bounded: tenant ids, agency codes from the tenant's manifest, and fixed outcome
names. Never a request id or anything a resident typed.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from hub.core.metrics import LATENCY_BUCKETS

DELIVERY_ATTEMPTS = Counter(
    "hub_requests_delivery_attempts_total",
    "Webhook deliveries to agencies, by tenant and outcome (sent, retry, dead).",
    ["tenant", "outcome"],
)
DELIVERIES_DEFERRED = Counter(
    "hub_requests_deliveries_deferred_total",
    "Deliveries held back for a later send slot by the agency's max_deliveries_per_minute, "
    "by tenant and agency.",
    ["tenant", "agency"],
)
DELIVERY_LATENCY = Histogram(
    "hub_requests_delivery_seconds",
    "Time of one webhook POST to an agency, including connection setup.",
    ["tenant"],
    buckets=LATENCY_BUCKETS,
)
SLA_BREACHES = Counter(
    "hub_requests_sla_breaches_total",
    "Requests found open past their expected time, by tenant and service code.",
    ["tenant", "service"],
)
INTAKE = Counter(
    "hub_requests_intake_total",
    "New service requests by tenant and outcome (accepted, replayed, rejected).",
    ["tenant", "outcome"],
)
STATUS_UPDATES = Counter(
    "hub_requests_status_updates_total",
    "Status updates by tenant and outcome (applied, superseded, duplicate).",
    ["tenant", "outcome"],
)
DUPLICATES_LINKED = Counter(
    "hub_requests_duplicates_linked_total",
    "New requests linked to an open request nearby, by tenant and scope (tenant, region).",
    ["tenant", "scope"],
)
TRANSFERS = Counter(
    "hub_requests_transfers_total",
    "Requests transferred to another jurisdiction, by receiving tenant.",
    ["tenant"],
)
