"""Tenant registry: immutable snapshots of tenants, cached in-process for the hot path.

Every Open311 call resolves `jurisdiction_id` to a tenant, so lookups are served from a
per-process cache for `CACHE_TTL_SECONDS`. A change made by onboarding in this process clears
the cache at once; other processes see it within the TTL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import structlog
from sqlalchemy import Engine, select

from hub.core.db import can_match_text, get_engine, unit_of_work
from hub.core.tenancy import SystemContext
from tenants.calendar import BusinessCalendar, sla_deadline
from tenants.languages import localized
from tenants.manifest import Manifest, ManifestError, ServiceSpec, parse_manifest
from tenants.models import Agency, Service, Tenant

log = structlog.get_logger(__name__)

CACHE_TTL_SECONDS = 5.0
# Maximum number of cached lookups, hits and misses together.
MAX_CACHE_ENTRIES = 10_000

STATUS_ACTIVE = "active"


@dataclass(frozen=True)
class ServiceInfo:
    """One active catalog entry, as stored by onboarding, with its agency resolved."""

    code: str
    names: Mapping[str, str]
    descriptions: Mapping[str, str]
    type: str
    keywords: tuple[str, ...]
    group: str
    attributes: tuple[Mapping[str, Any], ...]
    agency_code: str | None
    sla_hours: float | None
    sla_clock: str
    location_sensitive: bool
    open_data_location: str
    h3_resolution: int

    @property
    def metadata(self) -> bool:
        """Open311 `metadata`: true when the service definition has attributes."""
        return bool(self.attributes)

    def name(self, language: str, default_language: str) -> str:
        """Return the name in `language`, else its base language, else the default one."""
        return localized(self.names, language, default_language) or ""


@dataclass(frozen=True)
class TenantInfo:
    """A read-only snapshot of one tenant, shared between threads through the cache.

    NOTE: the dicts and lists inside `manifest` are plain mutable containers, because pydantic
    freezes only attribute assignment. Callers must treat them as read-only.
    """

    id: str
    jurisdiction_id: str
    name: str
    timezone: str
    languages: tuple[str, ...]
    default_language: str
    region: str | None
    status: str
    manifest_version: int
    manifest: Manifest
    services: Mapping[str, ServiceInfo]
    calendar: BusinessCalendar
    # Name of every agency the tenant has had, by code, inactive ones included, because
    # stored requests keep the code of an agency that a later manifest renamed or removed.
    agency_names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def active(self) -> bool:
        return self.status == STATUS_ACTIVE

    def service(self, code: str) -> ServiceInfo | None:
        return self.services.get(code)

    def sla_deadline(self, service_code: str, start_utc: datetime) -> datetime | None:
        """Return the SLA deadline (Open311 `expected_datetime`) of a request of
        `service_code` received at `start_utc`, or None without a target or service."""
        service = self.services.get(service_code)
        if service is None:
            return None
        return sla_deadline(
            start_utc, service.sla_hours, service.sla_clock, self.calendar, self.timezone
        )


def _service_info(row: Service, spec: ServiceSpec | None) -> ServiceInfo:
    return ServiceInfo(
        code=row.code,
        names=MappingProxyType(dict(row.names)),
        descriptions=MappingProxyType(dict(row.descriptions or {})),
        type=row.type,
        keywords=tuple(row.keywords or ()),
        group=row.group,
        attributes=tuple(MappingProxyType(dict(a)) for a in row.attributes or ()),
        agency_code=row.agency_code,
        sla_hours=row.sla_hours,
        sla_clock=spec.sla_clock if spec is not None else "business",
        location_sensitive=row.location_sensitive,
        open_data_location=row.open_data_location,
        h3_resolution=row.h3_resolution,
    )


def _snapshot(tenant: Tenant, services: list[Service], agencies: list[Agency]) -> TenantInfo:
    manifest = parse_manifest(tenant.manifest, source=f"tenant {tenant.id}", stored=True)
    catalog = {
        row.code: _service_info(row, manifest.service(row.code)) for row in services if row.active
    }
    return TenantInfo(
        id=tenant.id,
        jurisdiction_id=tenant.jurisdiction_id,
        name=tenant.name,
        timezone=tenant.timezone,
        languages=tuple(tenant.languages),
        default_language=tenant.default_language,
        region=tenant.region,
        status=tenant.status,
        manifest_version=tenant.manifest_version,
        manifest=manifest,
        services=MappingProxyType(catalog),
        calendar=BusinessCalendar.from_spec(manifest.calendar),
        agency_names=MappingProxyType({row.code: row.name for row in agencies}),
    )


class _Cache:
    """Entries keyed by (engine, lookup kind, value), each with an expiry time.

    The engine identifies its database. A URL key cost more than the rest of a cached lookup,
    because hashing a URL renders it as a string.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[Engine, str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Engine, str, str]) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key: tuple[Engine, str, str], value: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._entries) >= MAX_CACHE_ENTRIES:
                # Lookups of made-up jurisdictions are cached as misses, so a client could
                # otherwise grow the cache without end. Expired entries go first, then all.
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
                if len(self._entries) >= MAX_CACHE_ENTRIES:
                    self._entries = {}
            self._entries[key] = (now + CACHE_TTL_SECONDS, value)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _Cache()


def invalidate_cache() -> None:
    """Forget every cached tenant (called after onboarding and offboarding, and by tests)."""
    _cache.clear()


def _load(engine: Engine, *, tenant_id: str | None = None, jurisdiction_id: str | None = None):
    with unit_of_work(SystemContext("tenant registry"), engine=engine, write=False) as session:
        query = select(Tenant)
        if tenant_id is not None:
            query = query.where(Tenant.id == tenant_id)
        else:
            query = query.where(Tenant.jurisdiction_id == jurisdiction_id)
        tenant = session.scalars(query).first()
        if tenant is None:
            return None
        services = list(
            session.scalars(
                select(Service).where(Service.tenant_id == tenant.id).order_by(Service.code)
            )
        )
        agencies = list(session.scalars(select(Agency).where(Agency.tenant_id == tenant.id)))
        return _snapshot(tenant, services, agencies)


def _lookup(kind: str, value: str, engine: Engine | None) -> TenantInfo | None:
    engine = engine or get_engine()
    if not can_match_text(value):
        return None
    key = (engine, kind, value)
    hit, info = _cache.get(key)
    if hit:
        return info
    if kind == "id":
        info = _load(engine, tenant_id=value)
    else:
        info = _load(engine, jurisdiction_id=value)
    _cache.put(key, info)
    return info


def get_tenant(tenant_id: str, *, engine: Engine | None = None) -> TenantInfo | None:
    """Return the tenant with this id, or None. Offboarded tenants are returned too: check
    `active` before serving requests for them."""
    return _lookup("id", tenant_id, engine)


def get_tenant_by_jurisdiction(
    jurisdiction_id: str, *, engine: Engine | None = None
) -> TenantInfo | None:
    """Return the tenant whose Open311 `jurisdiction_id` (its domain) matches, or None.

    The match is exact after lower-casing, since manifests store domains in lower case.
    """
    return _lookup("jurisdiction", jurisdiction_id.strip().lower(), engine)


def list_tenants(
    *, engine: Engine | None = None, include_inactive: bool = False
) -> list[TenantInfo]:
    """Return every tenant ordered by id (not cached: for commands and reports).

    A tenant whose stored manifest no longer validates is left out and logged, so one broken
    row does not hide the others. `get_tenant` on such a tenant raises `ManifestError`.
    """
    engine = engine or get_engine()
    with unit_of_work(SystemContext("tenant list"), engine=engine, write=False) as session:
        tenants = list(session.scalars(select(Tenant).order_by(Tenant.id)))
        services = list(session.scalars(select(Service).order_by(Service.code)))
        agencies = list(session.scalars(select(Agency)))
    by_tenant: dict[str, list[Service]] = {}
    for row in services:
        by_tenant.setdefault(row.tenant_id, []).append(row)
    agencies_by_tenant: dict[str, list[Agency]] = {}
    for agency in agencies:
        agencies_by_tenant.setdefault(agency.tenant_id, []).append(agency)
    infos = []
    for tenant in tenants:
        try:
            infos.append(
                _snapshot(
                    tenant, by_tenant.get(tenant.id, []), agencies_by_tenant.get(tenant.id, [])
                )
            )
        except ManifestError as exc:
            log.error("tenant_manifest_invalid", tenant_id=tenant.id, problems=len(exc.problems))
    if include_inactive:
        return infos
    return [info for info in infos if info.active]


def _region_member(tenant_id: str, region: str, engine: Engine) -> TenantInfo | None:
    """Return one region member, or None when its stored manifest no longer validates.

    Regional work (duplicate search, alerts) runs on behalf of another tenant, so one broken
    member is logged and left out instead of failing that tenant's request.
    """
    try:
        return get_tenant(tenant_id, engine=engine)
    except ManifestError as exc:
        log.warning(
            "region_member_manifest_invalid", tenant_id=tenant_id, region=region, error=exc.code
        )
        return None


def tenants_in_region(region: str, *, engine: Engine | None = None) -> list[TenantInfo]:
    """Return the active tenants of `region`, ordered by id, for regional alerts and mutual
    aid. Cached like single lookups."""
    engine = engine or get_engine()
    key = (engine, "region", region)
    hit, members = _cache.get(key)
    if hit:
        return list(members)
    with unit_of_work(SystemContext("tenant region"), engine=engine, write=False) as session:
        ids = list(
            session.scalars(
                select(Tenant.id)
                .where(Tenant.region == region, Tenant.status == STATUS_ACTIVE)
                .order_by(Tenant.id)
            )
        )
    members = tuple(
        info for tid in ids if (info := _region_member(tid, region, engine)) is not None
    )
    _cache.put(key, members)
    return list(members)
