"""Onboarding partner centers and agreements, and syncing a tenant's own centers.

A tenant's own centers are declared in its manifest's `overflow.centers`. They are copied into
`overflow_centers` when the live board first sees the tenant, and again when the manifest
changes, because tenant onboarding lives in a lower layer that cannot call this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from failover.eligibility import AgreementTerms, Hours
from failover.hysteresis import Thresholds
from failover.manifest import ALL_WEEK, PartnerManifest, as_datetime, weekly_minutes
from failover.models import Agreement, ContactCenter
from hub.core.clock import utcnow
from hub.core.errors import Conflict, InvalidInput, NotFound
from privacy.audit import audit
from tenants.models import Tenant

log = structlog.get_logger(__name__)

DEFAULT_TARGET_SECONDS = 30.0
DEFAULT_HEARTBEAT_TIMEOUT = 30.0


@dataclass(frozen=True)
class TenantOverflowConfig:
    """The overflow settings of one tenant, read from its manifest."""

    tenant_id: str
    thresholds: Thresholds
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    target_seconds: float = DEFAULT_TARGET_SECONDS
    target_percent: float = 80.0
    # The language tags the tenant serves, and the skills of its own centers (service groups a
    # contact may name). Both are sorted, and no skills means any service group.
    languages: tuple[str, ...] = ()
    service_groups: tuple[str, ...] = ()


def tenant_config(tenant: Tenant) -> TenantOverflowConfig:
    section = (tenant.manifest or {}).get("overflow") or {}
    raw = section.get("thresholds") or {}
    skills = {skill for spec in section.get("centers") or [] for skill in spec.get("skills") or []}
    thresholds = Thresholds(
        high_seconds=float(raw.get("high_wait_seconds", 120)),
        low_seconds=float(raw.get("low_wait_seconds", 45)),
        hold_on_seconds=float(raw.get("high_hold_seconds", 60)),
        hold_off_seconds=float(raw.get("low_hold_seconds", 300)),
    )
    return TenantOverflowConfig(
        tenant_id=tenant.id,
        thresholds=thresholds,
        heartbeat_timeout=float(raw.get("heartbeat_timeout_seconds", DEFAULT_HEARTBEAT_TIMEOUT)),
        target_seconds=float(section.get("service_level_target_seconds", DEFAULT_TARGET_SECONDS)),
        target_percent=float(section.get("service_level_target_percent", 80)),
        languages=tuple(sorted(tenant.languages or ())),
        service_groups=tuple(sorted(skills)),
    )


def hours_of(weekly: dict[str, Any] | None) -> Hours | None:
    if weekly is None:
        return None
    return Hours.from_weekly({day: [tuple(r) for r in ranges] for day, ranges in weekly.items()})


def agreement_terms(row: Agreement) -> AgreementTerms:
    return AgreementTerms(
        id=row.id,
        tenant_id=row.tenant_id,
        center_id=row.center_id,
        service_groups=frozenset(row.service_groups or ()),
        channels=frozenset(row.channels or ()),
        languages=frozenset(row.languages or ()),
        share_cap=row.share_cap,
        hours=hours_of(row.hours),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        active=row.active,
        data_level=row.data_level,
        cost_weight=row.cost_weight,
    )


def _insert_center(
    session: Session, center_id: str, owner_tenant_id: str, fields: dict[str, Any]
) -> ContactCenter:
    """Insert a center, or return the row another process inserted first.

    Several API processes sync the same manifest at once (the first heartbeat and the first
    contact often arrive together), so the insert runs in a savepoint and a unique-key clash
    reads the winner's row instead of failing the caller's request.
    """
    try:
        with session.begin_nested():
            center = ContactCenter(id=center_id, owner_tenant_id=owner_tenant_id, **fields)
            session.add(center)
            session.flush()
        return center
    except IntegrityError:
        existing = session.get(ContactCenter, center_id, populate_existing=True)
        if existing is None:
            raise
        return existing


def _own_center_specs(tenant: Tenant) -> list[dict[str, Any]]:
    """Return the `overflow.centers` entries of the tenant's stored manifest."""
    section = (tenant.manifest or {}).get("overflow") or {}
    return list(section.get("centers") or [])


def sync_tenant_centers(session: Session, tenant: Tenant) -> list[str]:
    """Create or update the tenant's own centers from its manifest; return their ids.

    A center id already used by another owner is skipped and logged, never taken over.
    """
    ids: list[str] = []
    for spec in _own_center_specs(tenant):
        center = session.get(ContactCenter, spec["id"])
        if center is not None and center.owner_tenant_id != tenant.id:
            log.warning("overflow_center_id_taken", center_id=spec["id"], tenant_id=tenant.id)
            continue
        fields = {
            "name": spec.get("name", spec["id"]),
            "timezone": tenant.timezone,
            "agents": int(spec.get("agents", 0)),
            "skills": list(spec.get("skills") or []),
            "languages": list(spec.get("languages") or ["en"]),
            "hours": weekly_minutes(spec.get("hours") or ALL_WEEK),
            "average_handle_seconds": float(spec.get("average_handle_seconds", 240)),
            "max_waiting": int(spec.get("max_waiting", 500)),
        }
        if center is None:
            center = _insert_center(session, spec["id"], tenant.id, fields)
            if center.owner_tenant_id != tenant.id:
                log.warning("overflow_center_id_taken", center_id=spec["id"], tenant_id=tenant.id)
                continue
        for name, value in fields.items():
            setattr(center, name, value)
        ids.append(center.id)
    return ids


def onboard_partner(session: Session, manifest: PartnerManifest, *, actor: str) -> dict[str, Any]:
    """Create or update a partner center and its agreements; audit each agreement.

    Must run in a system session because the agreements belong to several tenants. Raises
    NotFound for an unknown tenant and Conflict when the id is one of a tenant's own centers.
    """
    spec = manifest.center
    center = session.get(ContactCenter, spec.id)
    if center is not None and center.owner_tenant_id is not None:
        raise Conflict(
            f"center id {spec.id!r} is tenant {center.owner_tenant_id}'s own center; "
            "choose another id for the partner",
            code="center_id_taken",
        )
    for agreement in manifest.agreements:
        if session.get(Tenant, agreement.tenant) is None:
            raise NotFound(
                f"tenant {agreement.tenant!r} in agreements is not onboarded; "
                "onboard it first with `hub tenants onboard`",
                code="tenant_not_found",
            )

    created = center is None
    if center is None:
        center = ContactCenter(id=spec.id, owner_tenant_id=None)
        session.add(center)
    center.name = spec.name
    center.timezone = spec.timezone
    center.agents = spec.agents
    center.skills = list(spec.skills)
    center.languages = list(spec.languages)
    center.hours = weekly_minutes(spec.hours)
    center.average_handle_seconds = spec.average_handle_seconds
    center.max_waiting = spec.max_waiting
    session.flush()

    agreement_ids = []
    for item in manifest.agreements:
        row = session.scalars(
            select(Agreement).where(
                Agreement.tenant_id == item.tenant, Agreement.center_id == spec.id
            )
        ).one_or_none()
        if row is None:
            row = Agreement(
                id=item.id or f"{item.tenant}--{spec.id}",
                tenant_id=item.tenant,
                center_id=spec.id,
            )
            session.add(row)
        row.service_groups = list(item.service_groups)
        row.channels = list(item.channels)
        row.languages = list(item.languages)
        row.share_cap = item.share_cap
        row.hours = weekly_minutes(item.hours) if item.hours is not None else None
        city_zone = ZoneInfo(session.get(Tenant, item.tenant).timezone)
        row.valid_from = as_datetime(item.valid_from, city_zone)
        row.valid_until = as_datetime(item.valid_until, city_zone, whole_day=True)
        row.active = item.active
        row.data_level = item.data_level
        row.cost_weight = item.cost_weight
        row.updated_at = utcnow()
        session.flush()
        audit(
            session,
            tenant_id=item.tenant,
            actor=actor,
            action="overflow.agreement_saved",
            details={
                "agreement_id": row.id,
                "center_id": spec.id,
                "data_level": item.data_level,
                "active": item.active,
            },
        )
        agreement_ids.append(row.id)

    log.info(
        "overflow_partner_onboarded",
        center_id=spec.id,
        created=created,
        agreements=len(agreement_ids),
    )
    return {"center_id": spec.id, "created": created, "agreements": agreement_ids}


def check_partner_agent_center(session: Session, tenant_id: str, center_id: str) -> None:
    """Raise unless `center_id` is a partner center with an agreement with `tenant_id`.

    A tenant issues partner_agent keys to the agents of its partner centers, so the key's
    center must be one that takes the tenant's contacts. The tenant's own agents use the agent
    role instead.
    """
    onboard = "hub overflow partners onboard FILE"
    center = session.get(ContactCenter, center_id)
    owner = center.owner_tenant_id if center is not None else None
    # A tenant's own centers reach the table at the next reload of an API process's live
    # board, so a key created right after onboarding finds them only in the manifest.
    tenant = session.get(Tenant, tenant_id)
    if tenant is not None and center_id in {spec["id"] for spec in _own_center_specs(tenant)}:
        owner = tenant_id
    if owner is not None:
        raise InvalidInput(
            f"contact center {center_id!r} is tenant {owner!r}'s own center, not a partner "
            "center; create its agents' keys with --role agent and no --center",
            field="center_id",
        )
    if center is None:
        raise NotFound(
            f"contact center {center_id!r} not found; onboard the partner center with "
            f"`{onboard}`, with an agreement for tenant {tenant_id!r}, then create the key",
            code="center_not_found",
        )
    agreement = session.scalar(
        select(Agreement.id).where(
            Agreement.tenant_id == tenant_id, Agreement.center_id == center_id
        )
    )
    if agreement is None:
        raise InvalidInput(
            f"partner center {center_id!r} has no agreement with tenant {tenant_id!r}; add "
            f"one to the center's partner manifest and load it with `{onboard}`",
            field="center_id",
        )
