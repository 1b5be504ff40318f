"""Prometheus metrics of the privacy package. Labels carry table names, purposes declared in
code (others count as "other"), actions and outcomes, never personal data."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from hub.core.metrics import LATENCY_BUCKETS

DECRYPTIONS = Counter(
    "hub_privacy_decryptions_total",
    "Audited decryption calls, by table, purpose and outcome (ok, forbidden, failed).",
    ["table", "purpose", "outcome"],
)
AUDIT_ENTRIES = Counter(
    "hub_privacy_audit_entries_total", "Audit log entries appended, by action.", ["action"]
)
REENCRYPTED_ROWS = Counter(
    "hub_privacy_reencrypted_rows_total", "Rows re-encrypted under a new DEK, by table.", ["table"]
)
REENCRYPTION_SECONDS = Histogram(
    "hub_privacy_reencryption_batch_seconds",
    "Time to re-encrypt one batch of rows.",
    buckets=LATENCY_BUCKETS,
)
