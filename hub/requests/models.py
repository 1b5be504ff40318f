"""Service requests, their status history, outbound deliveries, tokens and idempotency keys.

Personal data lives only in the `*_enc` columns as ciphertext from `privacy.fields`; each
ciphertext is bound to its tenant, table, column and row id. `dek_version` is the data key that
encrypted the row, so rotation can count and re-encrypt rows per version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.clock import utcnow
from hub.core.db import Base
from hub.core.ids import new_uuid
from hub.core.tenancy import TenantOwned
from privacy.registry import register_dependent_rows, register_encrypted_table

STATES = ("submitted", "acknowledged", "in_progress", "on_hold", "closed")
# The states that Open311 (GeoReport v2) reports as status "open".
OPEN_STATES = tuple(state for state in STATES if state != "closed")
RESOLUTIONS = ("fixed", "duplicate", "not_ours", "no_action", "cancelled")
# Channel of the status event that a transfer to another jurisdiction writes.
TRANSFER_CHANNEL = "transfer"
# Channels of the status events that `service.post_status_update` writes: agencies' Open311
# updates and contacts completed by overflow agents. The hub's own events use other channels.
UPDATE_CHANNELS = ("agency", "overflow")


class ServiceRequest(TenantOwned, Base):
    __tablename__ = "service_requests"

    # The public tracking code (Open311 `service_request_id`), generated before insert.
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    service_code: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="submitted")
    resolution: Mapped[str | None] = mapped_column(String(16))
    agency_code: Mapped[str | None] = mapped_column(String(64))

    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expected_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()

    # Public coordinates. For location-sensitive services these are rounded to the open-data
    # rule and the exact point is only in `location_enc`.
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    # H3 cell (resolution 9) of the exact point, for duplicate search and targeting. NULL for
    # a location-sensitive service, whose requests are not linked as duplicates: the cell
    # would place the resident within about 200 m.
    h3_cell: Mapped[str | None] = mapped_column(String(16))
    # Code of the manifest district that contained the exact point at intake, stored only for
    # services published under the open-data `district` rule.
    district: Mapped[str | None] = mapped_column(String(64))
    zipcode: Mapped[str | None] = mapped_column(String(16))

    # Ciphertexts of personal data (privacy.fields format), all under `dek_version`.
    description_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    address_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Open311 `address_id`: an id in the city's address system, such as a parcel number. It
    # leads to the address as surely as the address text does.
    address_id_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    location_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    first_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    last_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    media_url_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    attributes_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    dek_version: Mapped[int | None] = mapped_column(Integer)

    # Blind indexes (truncated HMAC) of the normalized email and phone, and their key version.
    email_bidx: Mapped[str | None] = mapped_column(String(32))
    phone_bidx: Mapped[str | None] = mapped_column(String(32))
    bidx_version: Mapped[int | None] = mapped_column(Integer)

    channel: Mapped[str] = mapped_column(String(16), default="api")
    source: Mapped[str] = mapped_column(String(32), default="open311")
    source_id: Mapped[str | None] = mapped_column(String(120))
    # Blind index of the client's `device_id` under the tenant's index key (`bidx_version`),
    # so that one device's requests can be found without storing the id.
    device_id_bidx: Mapped[str | None] = mapped_column(String(32))
    # The resident's account in the client app, encrypted: it identifies a person.
    account_id_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    duplicate_of: Mapped[str | None] = mapped_column(String(16))
    # Set when a request was transferred in from another tenant: that tenant's id.
    transferred_from: Mapped[str | None] = mapped_column(String(64))
    sla_breached_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        Index("ix_requests_tenant_requested", "tenant_id", "requested_at"),
        Index("ix_requests_tenant_updated", "tenant_id", "updated_at"),
        Index("ix_requests_tenant_status_service", "tenant_id", "status", "service_code"),
        Index("ix_requests_tenant_cell", "tenant_id", "service_code", "h3_cell"),
        Index("ix_requests_tenant_email_bidx", "tenant_id", "email_bidx"),
        Index("ix_requests_tenant_phone_bidx", "tenant_id", "phone_bidx"),
        Index("ix_requests_tenant_dek", "tenant_id", "dek_version"),
        Index("ix_requests_tenant_expected", "tenant_id", "status", "expected_at"),
        UniqueConstraint("tenant_id", "source", "source_id", name="uq_requests_source"),
    )


class StatusEvent(TenantOwned, Base):
    """One change in a request's life: who, when, through which channel, with which note."""

    __tablename__ = "status_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("service_requests.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16))
    resolution: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(120))
    channel: Mapped[str] = mapped_column(String(32))
    # Free-text note, encrypted like every free text; the public view shows status only.
    note_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    dek_version: Mapped[int | None] = mapped_column(Integer)
    # Agency update id from `servicerequestupdates`; a repeated id is ignored.
    update_id: Mapped[str | None] = mapped_column(String(120))

    __table_args__ = (
        Index("ix_status_events_tenant_request", "tenant_id", "request_id", "at"),
        UniqueConstraint("tenant_id", "update_id", name="uq_status_events_update_id"),
    )


class Delivery(TenantOwned, Base):
    """Outbound routing of one request to one destination, with its own state and retries."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("service_requests.id", ondelete="CASCADE")
    )
    destination: Mapped[str] = mapped_column(String(64))  # agency code
    # The id that the agency receives as `X-Hub-Delivery-Id` and the body's `delivery_id`. A
    # random UUID, so it differs across databases, and it stays the same on every attempt.
    public_id: Mapped[str] = mapped_column(String(36), default=new_uuid)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, failed, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    # Start of the current retry window: the first attempt, or the first one after a redelivery.
    first_attempt_at: Mapped[datetime | None] = mapped_column()
    # When the delivery was given up; None unless the state is `dead`.
    dead_at: Mapped[datetime | None] = mapped_column()
    # A future send slot reserved under the agency's `max_deliveries_per_minute`. The
    # delivery waits for it with no attempt counted, and is then sent without reserving again.
    send_slot_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        UniqueConstraint("tenant_id", "request_id", "destination", name="uq_deliveries_dest"),
        Index("ix_deliveries_tenant_state", "tenant_id", "state"),
        # For the delivery gauges, read at every scrape. Pending and sent rows, the hot path's
        # inserts and updates, are left out of the index.
        Index(
            "ix_deliveries_undelivered",
            "state",
            "tenant_id",
            "destination",
            postgresql_where=text("state IN ('failed', 'dead')"),
            sqlite_where=text("state IN ('failed', 'dead')"),
        ),
    )


class RequestToken(TenantOwned, Base):
    """An Open311 token, returned when the request id is not yet known to the client."""

    __tablename__ = "request_tokens"

    token: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_request_tokens_tenant", "tenant_id", "token"),)


class IdempotencyRecord(TenantOwned, Base):
    """The stored outcome of a POST with an `Idempotency-Key`, replayed for a repeat."""

    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(16))
    token: Mapped[str | None] = mapped_column(String(40))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("tenant_id", "api_key_id", "key", name="uq_idempotency_key"),
    )


# The ciphertext columns of a request, all under its `dek_version`. Routing, transfers and the
# staff view read this list, and so do (through the privacy registry) re-encryption after DEK
# rotation, the coverage scan of the privacy report and the retention purge.
REQUEST_ENCRYPTED_COLUMNS = (
    "description_enc",
    "address_enc",
    "address_id_enc",
    "account_id_enc",
    "location_enc",
    "first_name_enc",
    "last_name_enc",
    "email_enc",
    "phone_enc",
    "media_url_enc",
    "attributes_enc",
)
# The clear columns that link a request to a person (blind indexes) or a precise place (the
# resolution-9 cell). The purge clears them with the ciphertexts; the public `lat`/`lon`, the
# district and the zipcode stay, as the open-data rule publishes them.
REQUEST_LINKING_COLUMNS = ("email_bidx", "phone_bidx", "device_id_bidx", "bidx_version", "h3_cell")
register_encrypted_table(
    "service_requests",
    id_column="id",
    columns=REQUEST_ENCRYPTED_COLUMNS,
    time_column="closed_at",
    linking_columns=REQUEST_LINKING_COLUMNS,
    delete_class="requests",
)
register_encrypted_table("status_events", id_column="id", columns=("note_enc",), time_column="at")
# A purged request's idempotency record goes: its `request_hash` is a hash of the body, which
# held the personal data. Deleting a request deletes everything that hangs on it.
register_dependent_rows("service_requests", "idempotency_keys", "request_id", on_purge="delete")
register_dependent_rows("service_requests", "request_tokens", "request_id")
register_dependent_rows("service_requests", "status_events", "request_id")
register_dependent_rows("service_requests", "deliveries", "request_id")
