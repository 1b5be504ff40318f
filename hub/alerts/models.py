"""Alerts, their approvals, subscribers and deliveries.

A regional alert is one row per participating tenant, all with the same `group_id`, so each
tenant approves, targets and delivers under its own scope and keys. Subscriber places are kept
only as H3 cells; addresses are kept only as ciphertext from `privacy.fields`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.clock import utcnow
from hub.core.db import Base
from hub.core.tenancy import TenantOwned
from privacy.registry import register_encrypted_table

# Alert states, in the order an alert normally moves through them.
DRAFT = "draft"  # composed, waiting for the approvals its tenant's policy demands
APPROVED = "approved"  # approvals complete, not sent yet
HELD = "held"  # an Update or Cancel whose reference is unknown; never sent
SENDING = "sending"  # deliveries created and batches queued
SENT = "sent"  # every delivery reached a final state and none failed
PARTLY_FAILED = "partly_failed"  # finished; some deliveries failed and some were sent
SEND_FAILED = "failed"  # finished; deliveries failed and none was sent
CANCELLED = "cancelled"  # a Cancel referenced it; pending deliveries were dropped
SUPERSEDED = "superseded"  # an Update referenced it
EXPIRED = "expired"  # `expires` passed before every delivery went out
ALERT_STATES = (
    DRAFT,
    APPROVED,
    HELD,
    SENDING,
    SENT,
    PARTLY_FAILED,
    SEND_FAILED,
    CANCELLED,
    SUPERSEDED,
    EXPIRED,
)
# States of an alert whose fan-out finished.
FINISHED_STATES = (SENT, PARTLY_FAILED, SEND_FAILED)

# Delivery states.
PENDING = "pending"
DELIVERED = "sent"
FAILED = "failed"
DROPPED = "dropped"  # cancelled or expired before it was sent
DELIVERY_STATES = (PENDING, DELIVERED, FAILED, DROPPED)

CHANNELS = ("webhook", "email", "webpush", "sms")

# Places are indexed at three H3 resolutions so a large alert area can be matched with coarse
# cells and a small one with fine cells, each through its own index.
FINE_RESOLUTION = 9  # cells of about 0.1 km2, a city block
MEDIUM_RESOLUTION = 7  # about 5 km2
COARSE_RESOLUTION = 5  # about 250 km2
INDEXED_RESOLUTIONS = (FINE_RESOLUTION, MEDIUM_RESOLUTION, COARSE_RESOLUTION)


class Alert(TenantOwned, Base):
    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    # Alerts composed together for several tenants of a region share the originator's id here.
    group_id: Mapped[str] = mapped_column(String(24))
    origin_tenant_id: Mapped[str] = mapped_column(String(64))
    # "alert" for emergency alerts (queue alerts.urgent), "notice" for non-emergency reverse
    # 311 notices (queue alerts.bulk), so notices never delay an alert.
    kind: Mapped[str] = mapped_column(String(16), default="alert")
    identifier: Mapped[str] = mapped_column(String(255))
    sender: Mapped[str] = mapped_column(String(255))
    sent: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    msg_type: Mapped[str] = mapped_column(String(16))
    urgency: Mapped[str | None] = mapped_column(String(16))
    severity: Mapped[str | None] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column()
    # The CAP 1.2 document as the hub publishes it (written by hub.alerts.cap.writer).
    cap_xml: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=DRAFT)
    # For Update and Cancel: this tenant's row of the referenced alert, once resolved.
    references_alert_id: Mapped[str | None] = mapped_column(String(24))
    hold_reason: Mapped[str | None] = mapped_column(String(300))
    created_by: Mapped[str] = mapped_column(String(120))
    # The person behind `created_by` when the alert was composed (`tenants.keys.actor_person`).
    created_by_person: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column()
    # Set when a single approver sent an Immediate and Extreme alert under the tenant's policy.
    review_due_at: Mapped[datetime | None] = mapped_column()
    # The review afterwards by another emergency manager (`service.review`).
    reviewed_at: Mapped[datetime | None] = mapped_column()
    reviewed_by: Mapped[str | None] = mapped_column(String(120))
    # The person behind `reviewed_by` when the review was recorded (`tenants.keys.actor_person`).
    reviewed_by_person: Mapped[str | None] = mapped_column(String(120))
    review_note: Mapped[str | None] = mapped_column(String(1000))
    send_started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    target_count: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        # A CAP identifier is unique per sender, so a reused one is rejected.
        UniqueConstraint("tenant_id", "sender", "identifier", name="uq_alerts_tenant_identifier"),
        Index("ix_alerts_tenant_group", "tenant_id", "group_id"),
        Index("ix_alerts_tenant_state", "tenant_id", "state"),
    )


class AlertApproval(TenantOwned, Base):
    __tablename__ = "alert_approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(120))
    # The person behind `actor` when the approval was given (`tenants.keys.actor_person`).
    person: Mapped[str] = mapped_column(String(120))
    approved_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("tenant_id", "alert_id", "actor", name="uq_alert_approvals_actor"),
    )


class Subscriber(TenantOwned, Base):
    __tablename__ = "alert_subscribers"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    # Language codes in order of preference, e.g. ["es-US", "en"].
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    test_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_at: Mapped[datetime] = mapped_column()
    # SHA-256 of the unsubscribe link token; the token itself is shown once at opt-in.
    unsubscribe_hash: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Where the opt-in came from, e.g. "api", "import:<file name>"; no personal data.
    source: Mapped[str] = mapped_column(String(120), default="api")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    unsubscribed_at: Mapped[datetime | None] = mapped_column()
    # Blind index of the subscriber's normalized channel addresses taken together
    # (`subscriptions.channels_text`), under the tenant's index key of version `bidx_version`.
    # Imports skip residents already subscribed by it. None where rows were inserted without
    # `subscriptions.subscribe`, as the alert benchmark does.
    channels_bidx: Mapped[str | None] = mapped_column(String(32))
    bidx_version: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_alert_subscribers_tenant_unsubscribe", "tenant_id", "unsubscribe_hash"),
        Index("ix_alert_subscribers_tenant_channels_bidx", "tenant_id", "channels_bidx"),
    )


class SubscriberChannel(TenantOwned, Base):
    __tablename__ = "alert_subscriber_channels"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("alert_subscribers.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(16))
    # The address (URL, e-mail, phone or Web Push subscription JSON), encrypted under the
    # tenant's DEK and bound to this table, column and the subscriber id.
    address_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # The DEK version `address_enc` is encrypted under (`FieldCipher.dek_version`).
    dek_version: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(64))
    # Blind index of the normalized address under the tenant's index key of version
    # `bidx_version`, so that an opt-in finds the other subscribers' rows for the same address.
    address_bidx: Mapped[str | None] = mapped_column(String(32))
    bidx_version: Mapped[int | None] = mapped_column(Integer)
    # The id of the first row of this channel and address in the tenant, or None on that row
    # itself. It links rows across index key versions, so an alert sends one message per
    # address (`hub.alerts.targeting.recipient_rows`) after a key rotation too.
    address_key: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "subscriber_id", "channel", name="uq_alert_subscriber_channels"
        ),
        Index("ix_alert_subscriber_channels_address", "tenant_id", "channel", "address_bidx"),
    )


class SubscriberCell(TenantOwned, Base):
    """One opted-in place of a subscriber, as its H3 cell at each indexed resolution."""

    __tablename__ = "alert_subscriber_cells"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("alert_subscribers.id", ondelete="CASCADE")
    )
    cell_fine: Mapped[int] = mapped_column(BigInteger)
    cell_medium: Mapped[int] = mapped_column(BigInteger)
    cell_coarse: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_alert_subscriber_cells_fine", "tenant_id", "cell_fine"),
        Index("ix_alert_subscriber_cells_medium", "tenant_id", "cell_medium"),
        Index("ix_alert_subscriber_cells_coarse", "tenant_id", "cell_coarse"),
        Index("ix_alert_subscriber_cells_subscriber", "tenant_id", "subscriber_id"),
    )


class Delivery(TenantOwned, Base):
    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    subscriber_id: Mapped[str] = mapped_column(String(24))
    channel: Mapped[str] = mapped_column(String(16))
    channel_row_id: Mapped[int] = mapped_column(BigInteger)
    batch: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    language: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The error of the last failed attempt. It is kept when the delivery is dropped, so a
    # review can still show why a resident was not reached before the drop.
    last_error: Mapped[str | None] = mapped_column(String(64))
    # Why a dropped delivery was dropped: the alert's end state (cancelled, superseded,
    # expired) or "unsubscribed".
    drop_reason: Mapped[str | None] = mapped_column(String(16))
    sent_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        # Redelivering a batch can never create a second row for the same recipient.
        UniqueConstraint(
            "tenant_id", "alert_id", "subscriber_id", "channel", name="uq_alert_deliveries"
        ),
        # Serves both "pending rows of one batch" and "does the alert have pending rows".
        Index("ix_alert_deliveries_tenant_state", "tenant_id", "alert_id", "state", "batch"),
    )


class RateBucket(TenantOwned, Base):
    """The token bucket of one (tenant, channel), shared by every worker process.

    `tokens` may be negative: a worker that takes more tokens than are available owes them,
    and its messages wait until the debt is paid at the channel's rate (`hub.alerts.ratelimit`).
    """

    __tablename__ = "alert_rate_buckets"

    channel: Mapped[str] = mapped_column(String(16))
    tokens: Mapped[float] = mapped_column(Float)
    # Seconds since the Unix epoch of the last refill, from the workers' clocks.
    updated: Mapped[float] = mapped_column(Float)

    __table_args__ = (PrimaryKeyConstraint("tenant_id", "channel", name="pk_alert_rate_buckets"),)


# DEK re-encryption, the coverage scan of the privacy report and the sealed tenant export find
# the channel addresses through the privacy registry. An address is bound to
# "<subscriber id>:<channel>" (`subscriptions.channel_address_id`). Addresses have no retention
# period: they are kept while the subscription is.
register_encrypted_table(
    "alert_subscriber_channels",
    id_column="id",
    columns=("address_enc",),
    row_id_columns=("subscriber_id", "channel"),
)
