"""Tenants, their credentials, agencies and service catalog."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.clock import utcnow
from hub.core.db import Base
from hub.core.tenancy import TenantOwned
from privacy.registry import register_encrypted_table


class Tenant(Base):
    """A jurisdiction served by the hub. Not tenant-owned itself: it is the tenant."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The city's domain, as Open311 clients send it in `jurisdiction_id`.
    jurisdiction_id: Mapped[str] = mapped_column(String(253), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    languages: Mapped[list[str]] = mapped_column(JSON)
    default_language: Mapped[str] = mapped_column(String(16))
    region: Mapped[str | None] = mapped_column(String(64), index=True)
    # The validated manifest as loaded, so per-tenant settings need no extra tables.
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="active")
    # Incremented when onboarding changes the manifest; equal content keeps the version.
    manifest_version: Mapped[int] = mapped_column(Integer, default=1)
    # Keyed digest of the manifest's canonical JSON (secrets included), to detect changes
    # (`tenants.onboarding.manifest_hash`).
    manifest_hash: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    offboarded_at: Mapped[datetime | None] = mapped_column()


class ApiKey(TenantOwned, Base):
    """A credential. Only a SHA-256 of the key is stored; the key is shown once at creation.

    Keys are 32 random bytes, so a fast hash is enough: there is nothing to brute-force.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # First characters of the key, used to find the row before comparing hashes.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(120))
    roles: Mapped[list[str]] = mapped_column(JSON)
    # For partner agents: the contact center whose contacts the key may see.
    center_id: Mapped[str | None] = mapped_column(String(64))
    # The person who uses the key (`keys.check_holder` sets the format), so the two-person
    # alert rule can tell that `apikey:N` and `cli:NAME` are the same person.
    holder: Mapped[str | None] = mapped_column(String(64))
    # For agency keys: codes of the agencies whose routed requests the key may update. Empty
    # on every other key.
    agencies: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The key's own limit of Open311 POST requests per minute, in place of the manifest's
    # `open311.max_posts_per_minute_per_key`: None uses the manifest's, 0 means no limit.
    max_posts_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id"),)


class Agency(TenantOwned, Base):
    """An agency back office that receives routed requests."""

    __tablename__ = "agencies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    # Ciphertext (privacy.fields format) of the shared secret for the HMAC signature on
    # outbound webhooks. Read and written only through `tenants.agencies`.
    webhook_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Ciphertext of the secret that a rotation replaced. Deliveries carry a second signature
    # made with it until `previous_webhook_secret_expires_at`. After that it is unused, but the
    # row keeps it until the next rotation.
    previous_webhook_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_webhook_secret_expires_at: Mapped[datetime | None] = mapped_column()
    # The DEK version both secret ciphertexts are encrypted under.
    dek_version: Mapped[int | None] = mapped_column(Integer)
    # Keyed digest (a blind index under the tenant's index key) of the manifest
    # `webhook_secret` that onboarding applied last, so that a later onboarding can tell a
    # line left over from before a rotation from a new secret. None until a manifest sets one.
    manifest_secret_digest: Mapped[str | None] = mapped_column(String(64))
    # False once an agency is removed from the manifest; past deliveries still name it.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The manifest's cap on deliveries sent to the agency, over all workers; None for no cap.
    max_deliveries_per_minute: Mapped[float | None] = mapped_column(Float)
    # Start of the agency's next free send slot under that cap, which
    # `hub.requests.send_slots` reserves and moves forward. None before the first reservation.
    next_send_slot_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (UniqueConstraint("tenant_id", "code", name="uq_agencies_tenant_code"),)


AGENCY_SECRET_COLUMNS = ("webhook_secret_enc", "previous_webhook_secret_enc")
# DEK re-encryption, the privacy report's coverage scan and `hub privacy keys` find the webhook
# secrets through the privacy registry. They have no retention period and stay out of the
# sealed tenant export, because they are credentials, not the tenant's records.
register_encrypted_table("agencies", id_column="id", columns=AGENCY_SECRET_COLUMNS, exported=False)


class ManifestRevision(TenantOwned, Base):
    """One onboarded version of a tenant's manifest, kept so catalog changes can be traced."""

    __tablename__ = "tenant_manifest_revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    manifest_hash: Mapped[str] = mapped_column(String(64))
    # The stored form of the manifest (webhook secrets removed).
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("tenant_id", "version", name="uq_manifest_revisions_version"),
    )


class Service(TenantOwned, Base):
    """One entry of a tenant's Open311 service catalog."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    # Resident-facing text per language code, e.g. {"en": "Pothole", "es": "Bache"}.
    names: Mapped[dict[str, str]] = mapped_column(JSON)
    descriptions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    type: Mapped[str] = mapped_column(String(16), default="realtime")
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    group: Mapped[str] = mapped_column(String(120), default="")
    # Open311 service definition attributes, as validated by the manifest schema.
    attributes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    agency_code: Mapped[str | None] = mapped_column(String(64))
    # SLA target in business hours on the tenant's calendar; None means no target.
    sla_hours: Mapped[float | None] = mapped_column(Float)
    # Exact coordinates of location-sensitive services are stored encrypted only.
    location_sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    # Open-data location rule: exact, h3, district or withheld; h3_resolution for "h3".
    open_data_location: Mapped[str] = mapped_column(String(16), default="h3")
    h3_resolution: Mapped[int] = mapped_column(Integer, default=8)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    notes: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("tenant_id", "code", name="uq_services_tenant_code"),)
