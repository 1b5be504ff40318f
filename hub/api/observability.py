"""Scrape-time collectors that `/metrics` on the API serves beside the process metrics.

`create_app` registers them once per process. The Celery queue depth is read from the broker.
The outbox backlog, the retrying and dead agency deliveries, the contacts waiting per center,
the time alerts take to reach everyone, the alerts sent and their deliveries, and the key
ages and audit chain lengths are read from the database.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, utcnow
from hub.core.collectors import (
    OUTBOX_OLDEST,
    OUTBOX_PENDING,
    QUEUE_CONSUMERS,
    QUEUE_DEPTH,
    WORKER_STARTS,
    GaugeSpec,
    Reader,
    Samples,
    ScrapeCollector,
    ScrapeGroup,
    age_seconds,
    outbox_reader,
    queue_depth_reader,
    worker_starts_reader,
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
    "Sequence number of the newest entry of each audit chain (one per tenant, plus `hub` for "
    "hub-wide events): the entries written to it, those the retention purge deleted included.",
    ["chain"],
)
AUDIT_REGRESSIONS = GaugeSpec(
    "hub_audit_chain_regressions",
    "1 while an audit chain no longer reaches the highest head this process read or a "
    "checkpoint signed (entries were deleted from its end), else 0.",
    ["chain"],
)


def privacy_reader() -> Reader | None:
    """Build the reader of key ages, audit chain lengths and audit chain regressions, or None
    without the privacy tables.

    The reader remembers the highest (seq, hash) it read of each chain, and raises it to the
    head signed in `audit_heads` when that is higher. A chain whose entry at that seq is gone
    or has another hash regressed, even when new entries brought its length back, unless the
    retention purge deleted that entry and the chain's signed anchor is at or above it.
    """
    try:
        from privacy.models import AuditAnchor, AuditEntry, AuditHead, TenantKey
    except ImportError:
        return None

    highest: dict[str, tuple[int, str]] = {}

    def regressions(session: Session) -> dict[str, bool]:
        for head in session.scalars(select(AuditHead)):
            if head.seq > highest.get(head.chain, (0, ""))[0]:
                highest[head.chain] = (head.seq, head.hash)
        if not highest:
            return {}
        stored = dict(
            session.execute(
                select(AuditEntry.chain, AuditEntry.hash).where(
                    or_(
                        *(
                            (AuditEntry.chain == chain) & (AuditEntry.seq == seq)
                            for chain, (seq, _) in highest.items()
                        )
                    )
                )
            ).all()
        )
        anchors = {a.chain: (a.seq, a.hash) for a in session.scalars(select(AuditAnchor))}

        def regressed(chain: str, seq: int, digest: str) -> bool:
            anchor_seq, anchor_hash = anchors.get(chain, (0, ""))
            if seq < anchor_seq:
                # The retention purge deleted the entry from the chain's start, not its end.
                return False
            if seq == anchor_seq:
                return digest != anchor_hash
            return stored.get(chain) != digest

        return {chain: regressed(chain, seq, digest) for chain, (seq, digest) in highest.items()}

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
            regressed = regressions(session)
            heads = (
                session.execute(
                    select(AuditEntry.chain, AuditEntry.seq, AuditEntry.hash).where(
                        or_(
                            *(
                                (AuditEntry.chain == chain) & (AuditEntry.seq == seq)
                                for chain, seq in chains
                            )
                        )
                    )
                ).all()
                if chains
                else []
            )
        for chain, seq, digest in heads:
            # A regressed chain keeps its old mark, so the gauge stays up until a restart.
            if not regressed.get(chain) and seq > highest.get(chain, (0, ""))[0]:
                highest[chain] = (seq, digest)
        return {
            KEY_AGE.name: [((tenant, kind), age_seconds(at, now)) for tenant, kind, at in keys],
            AUDIT_CHAIN.name: [((chain,), float(seq or 0)) for chain, seq in chains],
            AUDIT_REGRESSIONS.name: [
                ((chain,), 1.0 if regressed.get(chain) else 0.0) for chain in sorted(highest)
            ],
        }

    return read


CONTACTS_WAITING = GaugeSpec(
    "hub_overflow_contacts_waiting", "Contacts waiting for an agent, per center.", ["center"]
)
OLDEST_WAIT = GaugeSpec(
    "hub_overflow_oldest_wait_seconds",
    "Age in seconds of the oldest contact waiting at each center.",
    ["center"],
)


def overflow_reader() -> Reader:
    """Build the reader of waiting contacts and the oldest wait per center."""
    from failover.models import Contact

    def read() -> Samples:
        now = utcnow()
        with unit_of_work(SystemContext("metrics collector"), write=False) as session:
            # NOTE: no index leads with state, so this scans the open contacts of all tenants;
            # it runs at most once per cache interval.
            rows = session.execute(
                select(Contact.center_id, func.count(), func.min(Contact.arrived_at))
                .where(Contact.state == "waiting")
                .group_by(Contact.center_id)
            ).all()
        return {
            CONTACTS_WAITING.name: [((center or "none",), float(n)) for center, n, _ in rows],
            OLDEST_WAIT.name: [
                ((center or "none",), age_seconds(at, now)) for center, _, at in rows
            ],
        }

    return read


FANOUT_LAST = GaugeSpec(
    "hub_alerts_last_fanout_seconds",
    "Seconds from send start until every delivery of the tenant's last finished alert ended "
    "(sent or failed for good).",
    ["tenant"],
)
FANOUT_RUNNING = GaugeSpec(
    "hub_alerts_sending_seconds",
    "Seconds since the oldest alert still sending started, per tenant. An alert stays sending "
    "while any of its deliveries is pending, and its deliveries are created when its send "
    "starts, so this is the age of the tenant's oldest pending alert delivery.",
    ["tenant"],
)
# Finished alerts older than this are left out of `hub_alerts_last_fanout_seconds`.
FANOUT_WINDOW = timedelta(days=7)


def fanout_reader() -> Reader:
    """Build the reader of the time to reach all recipients of an alert, per tenant."""
    from hub.alerts.models import SENDING, Alert

    def read() -> Samples:
        now = utcnow()
        last: dict[str, float] = {}
        running: dict[str, float] = {}
        with unit_of_work(SystemContext("metrics collector"), write=False) as session:
            finished = session.execute(
                select(Alert.tenant_id, Alert.send_started_at, Alert.finished_at)
                .where(Alert.finished_at >= now - FANOUT_WINDOW, Alert.send_started_at.isnot(None))
                .order_by(Alert.finished_at)
            ).all()
            sending = session.execute(
                select(Alert.tenant_id, func.min(Alert.send_started_at))
                .where(Alert.state == SENDING)
                .group_by(Alert.tenant_id)
            ).all()
        for tenant, started, ended in finished:
            last[tenant] = max((as_utc(ended) - as_utc(started)).total_seconds(), 0.0)
        for tenant, started in sending:
            running[tenant] = age_seconds(started, now)
        return {
            FANOUT_LAST.name: [((tenant,), value) for tenant, value in last.items()],
            FANOUT_RUNNING.name: [((tenant,), value) for tenant, value in running.items()],
        }

    return read


ALERTS_SENT = GaugeSpec(
    "hub_alerts_sent",
    "Alerts whose send started, per tenant, kind (alert or notice), CAP status and msgType; "
    "a regional alert counts once in each tenant.",
    ["tenant", "kind", "status", "msg_type"],
)
ALERT_DELIVERIES = GaugeSpec(
    "hub_alerts_deliveries",
    "Alert deliveries per tenant, channel and state (pending, sent, failed, dropped).",
    ["tenant", "channel", "state"],
)
# Counting every delivery row scans the table, which has a row per resident and channel of
# every alert, so these counts are read at most once per 30 seconds.
ALERT_TOTALS_MAX_AGE = 30.0


def alert_totals_reader(engine: Engine | None = None) -> Reader:
    """Build the reader of alerts sent and of their deliveries by channel and state.

    Counted from the database, so sends started by the CLI, whose process exits before any
    scrape, count as well as those of the API.
    """
    from hub.alerts.models import Alert
    from hub.alerts.models import Delivery as AlertDelivery

    def read() -> Samples:
        with unit_of_work(SystemContext("metrics collector"), engine=engine, write=False) as s:
            sent = s.execute(
                select(Alert.tenant_id, Alert.kind, Alert.status, Alert.msg_type, func.count())
                .where(Alert.send_started_at.is_not(None))
                .group_by(Alert.tenant_id, Alert.kind, Alert.status, Alert.msg_type)
            ).all()
            deliveries = s.execute(
                select(
                    AlertDelivery.tenant_id,
                    AlertDelivery.channel,
                    AlertDelivery.state,
                    func.count(),
                ).group_by(AlertDelivery.tenant_id, AlertDelivery.channel, AlertDelivery.state)
            ).all()
        return {
            ALERTS_SENT.name: [
                ((tenant, kind, status, msg_type), float(count))
                for tenant, kind, status, msg_type, count in sent
            ],
            ALERT_DELIVERIES.name: [
                ((tenant, channel, state), float(count))
                for tenant, channel, state, count in deliveries
            ],
        }

    return read


DELIVERIES = GaugeSpec(
    "hub_requests_deliveries",
    "Agency deliveries waiting for a retry (state failed) or given up (state dead), per tenant "
    "and agency code.",
    ["tenant", "agency", "state"],
)
DELIVERY_OLDEST_RETRY = GaugeSpec(
    "hub_requests_delivery_oldest_retry_seconds",
    "Seconds since the first attempt of the oldest delivery waiting for a retry, per tenant and "
    "agency code.",
    ["tenant", "agency"],
)


def delivery_reader(engine: Engine | None = None) -> Reader:
    """Build the reader of retrying and dead agency deliveries per tenant and agency."""
    from hub.requests.models import Delivery

    def read() -> Samples:
        now = utcnow()
        with unit_of_work(SystemContext("metrics collector"), engine=engine, write=False) as s:
            rows = s.execute(
                select(
                    Delivery.tenant_id,
                    Delivery.destination,
                    Delivery.state,
                    func.count(),
                    func.min(Delivery.first_attempt_at),
                )
                .where(Delivery.state.in_(("failed", "dead")))
                .group_by(Delivery.tenant_id, Delivery.destination, Delivery.state)
            ).all()
        return {
            DELIVERIES.name: [
                ((tenant, agency, state), float(count)) for tenant, agency, state, count, _ in rows
            ],
            DELIVERY_OLDEST_RETRY.name: [
                ((tenant, agency), age_seconds(first, now))
                for tenant, agency, state, _, first in rows
                if state == "failed"
            ],
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
        group.add(ScrapeCollector("worker_starts", [WORKER_STARTS], worker_starts_reader()))
        group.add(ScrapeCollector("overflow", [CONTACTS_WAITING, OLDEST_WAIT], overflow_reader()))
        group.add(ScrapeCollector("alerts", [FANOUT_LAST, FANOUT_RUNNING], fanout_reader()))
        group.add(
            ScrapeCollector(
                "alert_totals",
                [ALERTS_SENT, ALERT_DELIVERIES],
                alert_totals_reader(),
                max_age=ALERT_TOTALS_MAX_AGE,
            )
        )
        group.add(
            ScrapeCollector("deliveries", [DELIVERIES, DELIVERY_OLDEST_RETRY], delivery_reader())
        )
        reader = privacy_reader()
        if reader is not None:
            group.add(ScrapeCollector("privacy", [KEY_AGE, AUDIT_CHAIN, AUDIT_REGRESSIONS], reader))
        register_scrape_collector(group)
        _installed = True
