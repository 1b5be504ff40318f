"""Prometheus metrics of the tenants package (labels are bounded enums, never key material)."""

from __future__ import annotations

from prometheus_client import Counter

API_KEY_LOOKUPS = Counter(
    "hub_tenants_api_key_lookups_total",
    "API key resolutions by outcome: missing, malformed, valid, rejected, and the same two "
    "with _cached when answered from the in-process cache.",
    ["outcome"],
)
ONBOARDINGS = Counter(
    "hub_tenants_onboardings_total",
    "Manifest onboardings by outcome: created, updated or unchanged.",
    ["outcome"],
)
