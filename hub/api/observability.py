"""Scrape-time collectors that `/metrics` on the API serves beside the process metrics.

Registered once per process by `create_app`: the Celery queue depth read from the broker, the
outbox backlog read from the database, and the key ages and audit chain lengths read from the
privacy tables.
"""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from hub.core.clock import utcnow
from hub.core.collectors import (
    OUTBOX_OLDEST,
    OUTBOX_PENDING,
    QUEUE_CONSUMERS,
    QUEUE_DEPTH,
    GaugeSpec,
    Reader,
    Samples,
    ScrapeCollector,
    ScrapeGroup,
    age_seconds,
    outbox_reader,
    queue_depth_reader,
)
from hub.core.db import unit_of_work
from hub.core.metrics import register_scrape_collector
from hub.core.tasks import ALL_QUEUES
from hub.core.tenancy import SystemContext

_installed = False
_install_lock = threading.Lock()


KEY_AGE = GaugeSpec(
    "hub_privacy_key_age_seconds",
    "Age in seconds of each tenant's primary key of each kind (kek, dek, index, audit).",
    ["tenant", "kind"],
)
AUDIT_CHAIN = GaugeSpec(
    "hub_audit_chain_entries",
    "Entries in each audit chain (one per tenant, plus `hub` for hub-wide events).",
    ["chain"],
)


def privacy_reader() -> Reader | None:
    """Build the reader of key ages and audit chain lengths, or None without the privacy tables."""
    try:
        from privacy.models import AuditEntry, TenantKey
    except ImportError:
        return None

    def read() -> Samples:
        now = utcnow()
        with unit_of_work(SystemContext("metrics collector"), write=False) as session:
            # The primary version of a kind is the newest one not retired.
            keys = session.execute(
                select(TenantKey.tenant_id, TenantKey.kind, func.max(TenantKey.created_at))
                .where(TenantKey.retired_at.is_(None))
                .group_by(TenantKey.tenant_id, TenantKey.kind)
            ).all()
            chains = session.execute(
                select(AuditEntry.chain, func.max(AuditEntry.seq)).group_by(AuditEntry.chain)
            ).all()
        return {
            KEY_AGE.name: [((tenant, kind), age_seconds(at, now)) for tenant, kind, at in keys],
            AUDIT_CHAIN.name: [((chain,), float(seq or 0)) for chain, seq in chains],
        }

    return read


def install_collectors() -> None:
    """Register the scrape-time collectors in this process (later calls do nothing)."""
    global _installed
    with _install_lock:
        if _installed:
            return

        def connect():  # noqa: ANN202 - a kombu Connection
            from hub.worker.app import celery_app

            return celery_app.connection_for_read()

        group = ScrapeGroup()
        group.add(
            ScrapeCollector(
                "broker_queues",
                [QUEUE_DEPTH, QUEUE_CONSUMERS],
                queue_depth_reader(connect, ALL_QUEUES),
            )
        )
        group.add(ScrapeCollector("outbox", [OUTBOX_PENDING, OUTBOX_OLDEST], outbox_reader()))
        reader = privacy_reader()
        if reader is not None:
            group.add(ScrapeCollector("privacy", [KEY_AGE, AUDIT_CHAIN], reader))
        register_scrape_collector(group)
        _installed = True
