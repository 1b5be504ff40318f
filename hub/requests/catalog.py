"""Accessors for the parts of a tenant snapshot (`tenants.registry.TenantInfo`) that requests use.

The services take the snapshot as an argument instead of loading it, so the API resolves it
once per call from the registry's in-process cache. The protocols name the attributes used.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from hub.requests.geo import ServiceArea, prepare_area
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
    manifest: Manifest
    services: Mapping[str, CatalogService]


def localized(text: Mapping[str, str] | str | None, language: str, fallback: str) -> str | None:
    """Pick the text for `language`, then its primary subtag, then `fallback`, then any."""
    if text is None or isinstance(text, str):
        return text
    if language in text:
        return text[language]
    primary = language.split("-", 1)[0]
    if primary in text:
        return text[primary]
    if fallback in text:
        return text[fallback]
    return next(iter(text.values()), None)


_areas: dict[tuple[str, int], ServiceArea | None] = {}
_areas_lock = threading.Lock()


def service_area(tenant: TenantSnapshot) -> ServiceArea | None:
    """The tenant's prepared service area, built once per manifest version."""
    key = (tenant.id, tenant.manifest_version)
    area = _areas.get(key, False)
    if area is not False:
        return area
    geometry = tenant.manifest.service_area
    prepared = prepare_area({"type": geometry.type, "coordinates": geometry.coordinates})
    with _areas_lock:
        _areas[key] = prepared
    return prepared


def open_data_rule(service: CatalogService) -> tuple[str, int]:
    """Return the service's open-data location rule and the H3 resolution of the `h3` rule."""
    return service.open_data_location, service.h3_resolution


def destinations(_tenant: TenantSnapshot, service: CatalogService) -> list[str]:
    """Agency codes that receive a request of `service` (the registry resolves routing)."""
    return [service.agency_code] if service.agency_code else []


def expected_at(
    tenant: TenantSnapshot, service: CatalogService, requested_at: datetime
) -> datetime | None:
    """When the request is due: the SLA target on the business calendar, or on the clock."""
    if service.sla_hours is None:
        return None
    if service.sla_clock == "continuous":
        return requested_at + timedelta(hours=service.sla_hours)
    # TODO: move this import to the top once tenants.calendar lands in the repository.
    from tenants.calendar import add_business_hours

    return add_business_hours(
        requested_at, service.sla_hours, tenant.manifest.calendar, tenant.timezone
    )


def local_time(tenant: TenantSnapshot, value: datetime) -> datetime:
    return value.astimezone(ZoneInfo(tenant.timezone))
