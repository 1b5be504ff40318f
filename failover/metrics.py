"""Prometheus metrics of overflow routing. Labels are tenant ids, center ids from manifests
and fixed outcome names, never a contact id or any text from a caller."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "hub_overflow_decisions_total",
    "Routing decisions for new contacts, by tenant, target (home, partner) and reason.",
    ["tenant", "target", "reason"],
)
DECISION_LATENCY = Histogram(
    "hub_overflow_decision_seconds",
    "Time to take one routing decision from the in-memory live board.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
SWITCHES = Counter(
    "hub_overflow_switches_total",
    "Overflow and disaster mode switches, by tenant, switch (overflow, disaster) and new state.",
    ["tenant", "switch", "state"],
)
PARTNER_VIEWS = Counter(
    "hub_overflow_partner_views_total",
    "Contacts shown to partner agents, by center and data-sharing level.",
    ["center", "level"],
)
BOARD_REFRESH = Histogram(
    "hub_overflow_board_refresh_seconds",
    "Time to reload the live board from the database.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
EXPECTED_WAIT = Gauge(
    "hub_overflow_expected_wait_seconds",
    "Expected wait of a new contact at each center, as last computed by this process.",
    ["center"],
    multiprocess_mode="max",
)
STATE = Gauge(
    "hub_overflow_state",
    "Switches in force per tenant: 1 when overflow (or disaster mode) is on, 0 when off.",
    ["tenant", "switch"],
    multiprocess_mode="max",
)
