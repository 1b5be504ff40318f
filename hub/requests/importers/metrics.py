"""Prometheus metrics of imports. Labels: tenant id, format name and a fixed outcome."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

IMPORT_ROWS = Counter(
    "hub_import_rows_total",
    "Rows read from exports, by tenant, format and outcome (imported, existing, rejected).",
    ["tenant", "format", "outcome"],
)
IMPORT_BATCH_LATENCY = Histogram(
    "hub_import_batch_seconds",
    "Time to write one import batch (lookup, encryption, insert, commit).",
    ["format"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
