"""Accessors for the parts of a tenant snapshot (`tenants.registry.TenantInfo`) that requests use.

The services take the snapshot as an argument instead of loading it, so the API resolves it
once per call from the registry's in-process cache. The protocols name the attributes used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from tenants.calendar import sla_deadline
from tenants.geometry import Geometry
from tenants.manifest import Manifest


class CatalogService(Protocol):
    code: str
    names: Mapping[str, str]
    descriptions: Mapping[str, str]
    type: str
    keywords: Sequence[str]
    group: str
    attributes: Sequence[Mapping[str, Any]]
    agency_code: str | None
    sla_hours: float | None
    sla_clock: str
    location_sensitive: bool
    open_data_location: str
    h3_resolution: int


class TenantSnapshot(Protocol):
    id: str
    jurisdiction_id: str
    name: str
    timezone: str
    languages: Sequence[str]
    default_language: str
    region: str | None
    manifest_version: int
    active: bool
    manifest: Manifest
    services: Mapping[str, CatalogService]
    agency_names: Mapping[str, str]


@dataclass(frozen=True)
class ServiceArea:
    """A tenant's service area or one of its districts, with its bounding box, so most outside
    points skip the ray cast."""

    geometry: Geometry
    bounds: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat

    def contains(self, lat: float, lon: float) -> bool:
        min_lon, min_lat, max_lon, max_lat = self.bounds
        if not (min_lon <= lon <= max_lon and min_lat <= lat <= max_lat):
            return False
        return self.geometry.contains(lon, lat)


# Prepared areas by tenant and manifest version; a new manifest version gets a new entry.
_areas: dict[tuple[str, int], ServiceArea] = {}


def service_area(tenant: TenantSnapshot) -> ServiceArea:
    """Return the tenant's service area, prepared once per manifest version."""
    key = (tenant.id, tenant.manifest_version)
    area = _areas.get(key)
    if area is None:
        geometry = tenant.manifest.service_area
        area = ServiceArea(geometry, geometry.bounds())
        _areas[key] = area
    return area


def in_service_area(tenant: TenantSnapshot, lat: float, lon: float) -> bool:
    return service_area(tenant).contains(lat, lon)


# Prepared districts as (code, area) by tenant and manifest version, like `_areas`.
_districts: dict[tuple[str, int], list[tuple[str, ServiceArea]]] = {}


def district_at(tenant: TenantSnapshot, lat: float, lon: float) -> str | None:
    """Return the code of the first manifest district that contains the point, or None."""
    key = (tenant.id, tenant.manifest_version)
    districts = _districts.get(key)
    if districts is None:
        districts = [
            (district.code, ServiceArea(district.geometry, district.geometry.bounds()))
            for district in tenant.manifest.districts
        ]
        _districts[key] = districts
    for code, area in districts:
        if area.contains(lat, lon):
            return code
    return None


def open_data_rule(service: CatalogService) -> tuple[str, int]:
    """Return the service's open-data location rule and the H3 resolution of the `h3` rule.

    A location-sensitive service never publishes its exact point, so `exact` becomes `h3`.
    """
    rule = service.open_data_location
    if service.location_sensitive and rule == "exact":
        rule = "h3"
    return rule, service.h3_resolution


def destinations(_tenant: TenantSnapshot, service: CatalogService) -> list[str]:
    """Agency codes that receive a request of `service` (the registry resolves routing)."""
    return [service.agency_code] if service.agency_code else []


def expected_at(
    tenant: TenantSnapshot, service: CatalogService, requested_at: datetime
) -> datetime | None:
    """Return when the request is due under the service's SLA target, or None without one."""
    return sla_deadline(
        requested_at,
        service.sla_hours,
        service.sla_clock,
        tenant.manifest.calendar,
        tenant.timezone,
    )


def local_time(tenant: TenantSnapshot, value: datetime) -> datetime:
    return value.astimezone(ZoneInfo(tenant.timezone))
