"""Contact centers, overflow agreements, contacts, live center state and overflow switches.

Centers are not tenant-owned: an independent partner center serves several tenants. Agreements,
contacts and switches belong to the tenant whose residents are served. Contact personal data is
stored only as ciphertext from `privacy.fields`, bound to the contact's row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.clock import utcnow
from hub.core.db import Base
from hub.core.tenancy import TenantOwned
from privacy.registry import register_dependent_rows, register_encrypted_table

CONTACT_STATES = ("waiting", "claimed", "completed", "abandoned")
OPEN_STATES = ("waiting", "claimed")
CONTACTS_TABLE = "overflow_contacts"


class ContactCenter(Base):
    """A contact center: a tenant's own (from its manifest) or an independent partner."""

    __tablename__ = "overflow_centers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The tenant that runs the center, or None for an independent partner.
    owner_tenant_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    timezone: Mapped[str] = mapped_column(String(64))
    agents: Mapped[int] = mapped_column(Integer)
    skills: Mapped[list[str]] = mapped_column(JSON)
    languages: Mapped[list[str]] = mapped_column(JSON)
    # Weekday name -> list of [start, end] minutes after local midnight.
    hours: Mapped[dict[str, Any]] = mapped_column(JSON)
    average_handle_seconds: Mapped[float] = mapped_column(Float, default=240.0)
    # Waiting contacts at which the center counts as Full and takes no overflow.
    max_waiting: Mapped[int] = mapped_column(Integer, default=200)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CenterHeartbeat(Base):
    """The last heartbeat a center sent: its staffing now, and whether it is on standby."""

    __tablename__ = "overflow_heartbeats"

    center_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("overflow_centers.id", ondelete="CASCADE"), primary_key=True
    )
    at: Mapped[datetime] = mapped_column()
    agents_staffed: Mapped[int] = mapped_column(Integer)
    agents_available: Mapped[int] = mapped_column(Integer)
    standby: Mapped[bool] = mapped_column(Boolean, default=False)


class Agreement(TenantOwned, Base):
    """The terms under which a partner center takes the tenant's contacts."""

    __tablename__ = "overflow_agreements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    center_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("overflow_centers.id", ondelete="CASCADE")
    )
    service_groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    share_cap: Mapped[float] = mapped_column(Float, default=0.5)
    # Weekday name -> list of [start, end] minutes in the partner's time zone; None: its hours.
    hours: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    valid_from: Mapped[datetime | None] = mapped_column()
    valid_until: Mapped[datetime | None] = mapped_column()
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    data_level: Mapped[str] = mapped_column(String(16), default="minimal")
    cost_weight: Mapped[float] = mapped_column(Float, default=1.0)
    # Waiting or claimed contacts routed under this agreement. Routing raises it with a
    # conditional UPDATE that fails at the share cap, so the cap is enforced across API processes.
    open_contacts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by the code that changes the terms (`onboard_partner`), not on every update: taking
    # and giving back slots changes `open_contacts` all the time, and live boards reload
    # agreements when this moves.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("tenant_id", "center_id", name="uq_overflow_agreements_center"),
    )


class Contact(TenantOwned, Base):
    """One call, chat, web or SMS contact of a tenant's resident, and where it was routed."""

    __tablename__ = CONTACTS_TABLE

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # The telephony or chat system's id, so a repeated POST returns the first decision.
    external_id: Mapped[str | None] = mapped_column(String(120))
    channel: Mapped[str] = mapped_column(String(8))
    language: Mapped[str] = mapped_column(String(16))
    service_group: Mapped[str] = mapped_column(String(120))
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    home_center_id: Mapped[str | None] = mapped_column(String(64))
    center_id: Mapped[str | None] = mapped_column(String(64))
    decision_id: Mapped[str] = mapped_column(String(36))
    decision_reason: Mapped[str] = mapped_column(String(32))
    # The partners the decision passed over, as a JSON object of center id -> reason
    # (`routing.encode_excluded`), or None when it looked at none. Stored as text so the
    # one-round-trip insert binds it as a plain string.
    excluded_partners: Mapped[str | None] = mapped_column(Text)
    # Set by the task that writes the decision's audit entry, so a rerun writes none.
    decision_audited: Mapped[bool] = mapped_column(Boolean, default=False)
    # The credential that posted the contact (`apikey:<id>`), the actor of that entry.
    created_by: Mapped[str | None] = mapped_column(String(120))
    agreement_id: Mapped[str | None] = mapped_column(String(64))
    data_level: Mapped[str] = mapped_column(String(16), default="full")
    arrived_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    # Seconds from arrival to claim (or to abandonment), for the service level.
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    # The service request this contact is about, and the outcome an agent recorded.
    request_id: Mapped[str | None] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(32))

    caller_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    address_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    summary_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    dek_version: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_overflow_contacts_tenant_center_state", "tenant_id", "center_id", "state"),
        Index("ix_overflow_contacts_tenant_arrived", "tenant_id", "arrived_at"),
        # The live board's last hour of every tenant's contacts, read each second.
        Index("ix_overflow_contacts_arrived", "arrived_at"),
        UniqueConstraint("tenant_id", "external_id", name="uq_overflow_contacts_external"),
    )


# Partial indexes stay as small as the rows they cover: the open contacts, which the live board
# counts each second, and the decisions whose audit entry is not written yet. The queries use
# the same conditions with the values written inline, not as parameters, so PostgreSQL can
# prove that the index applies even to a prepared statement's generic plan.
OPEN_CONTACT = (Contact.state == literal_column("'waiting'")) | (
    Contact.state == literal_column("'claimed'")
)
UNAUDITED_CONTACT = Contact.decision_audited.is_(False)
Index(
    "ix_overflow_contacts_open",
    Contact.center_id,
    Contact.tenant_id,
    Contact.state,
    postgresql_where=OPEN_CONTACT,
    sqlite_where=OPEN_CONTACT,
)
Index(
    "ix_overflow_contacts_unaudited",
    Contact.tenant_id,
    Contact.arrived_at,
    postgresql_where=text("decision_audited IS false"),
    sqlite_where=text("decision_audited IS 0"),
)


class OverflowSwitch(TenantOwned, Base):
    """A tenant's overflow and disaster switches, with the surge detector's running timers.

    The timers live in the row so every API process continues the same hold period.
    """

    __tablename__ = "overflow_switches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    overflow_on: Mapped[bool] = mapped_column(Boolean, default=False)
    disaster: Mapped[bool] = mapped_column(Boolean, default=False)
    # Seconds since the epoch at which the current run above high / below low began.
    above_since: Mapped[float | None] = mapped_column(Float)
    below_since: Mapped[float | None] = mapped_column(Float)
    expected_wait: Mapped[float] = mapped_column(Float, default=0.0)
    changed_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("tenant_id", name="uq_overflow_switches_tenant"),)


# DEK re-encryption, the coverage scan and retention of the privacy report, and the sealed tenant
# export find the contact ciphertexts through the privacy registry. Retention counts from
# `finished_at`, so a contact still waiting or claimed is never purged.
register_encrypted_table(
    CONTACTS_TABLE,
    id_column="id",
    columns=("caller_name_enc", "phone_enc", "address_enc", "summary_enc"),
    time_column="finished_at",
)
# A contact outlives the request it created (the contact has a retention clock of its own), so
# deleting the request only unlinks it.
register_dependent_rows("service_requests", CONTACTS_TABLE, "request_id", on_delete="unlink")
