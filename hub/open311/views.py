"""The public GeoReport v2 view of services and requests.

Requests are shown anonymized: no names, contact details, address text, address ids or media
references, the description withheld, and coordinates and zipcode only as the service's
open-data rule allows.
Resident-facing text comes in the caller's language when the tenant offers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.core.clock import isoformat
from hub.requests import geo
from hub.requests.catalog import CatalogService, TenantSnapshot, open_data_rule
from hub.requests.models import ServiceRequest, StatusEvent
from tenants.languages import localized
from tenants.profile import TenantProfile, profile_for

SPEC_URL = "http://wiki.open311.org/GeoReport_v2"


def service_entry(profile: TenantProfile, service: CatalogService, language: str) -> dict:
    return {
        "service_code": service.code,
        "service_name": profile.service_name(service, language),
        "description": profile.service_description(service, language),
        "metadata": bool(service.attributes),
        "type": service.type,
        "keywords": ",".join(service.keywords),
        "group": profile.group_name(service, language),
    }


def service_list(tenant: TenantSnapshot, language: str) -> list[dict]:
    profile = profile_for(tenant)
    return [service_entry(profile, service, language) for service in tenant.services.values()]


def service_definition(tenant: TenantSnapshot, service: CatalogService, language: str) -> dict:
    language = profile_for(tenant).pick_language(language)
    fallback = tenant.default_language
    attributes = []
    ordered = sorted(
        enumerate(service.attributes), key=lambda pair: (pair[1].get("order", 0), pair[0])
    )
    for position, (_, attribute) in enumerate(ordered, start=1):
        entry: dict[str, Any] = {
            "variable": attribute.get("variable", True),
            "code": attribute["code"],
            "datatype": attribute.get("datatype", "string"),
            "required": bool(attribute.get("required", False)),
            "datatype_description": localized(
                attribute.get("datatype_descriptions") or None, language, fallback
            ),
            "order": attribute.get("order") or position,
            "description": localized(attribute.get("descriptions"), language, fallback) or "",
        }
        values = attribute.get("values") or []
        if values:
            entry["values"] = [
                {
                    "key": value["key"],
                    "name": localized(value.get("names"), language, fallback) or value["key"],
                }
                for value in values
            ]
        attributes.append(entry)
    return {"service_code": service.code, "attributes": attributes}


def _public_point(
    service: CatalogService | None, row: ServiceRequest
) -> tuple[float | None, float | None]:
    if row.lat is None or row.lon is None:
        return None, None
    if service is None:
        return None, None
    rule, resolution = open_data_rule(service)
    return geo.public_point(row.lat, row.lon, rule, resolution)


def _public_zipcode(service: CatalogService | None, row: ServiceRequest) -> str | None:
    """Return the zipcode when the service publishes coordinates of a non-sensitive location.

    A zipcode is a location too, and can be smaller than the H3 cell or district that a
    location-sensitive service publishes, so such a service shows none.
    """
    if service is None or service.location_sensitive:
        return None
    rule, _resolution = open_data_rule(service)
    return row.zipcode if rule in ("exact", "h3") else None


def _agency_name(tenant: TenantSnapshot, code: str | None) -> str | None:
    """Return the stored name of the agency `code`, also when a later manifest removed it."""
    if code is None:
        return None
    name = tenant.agency_names.get(code)
    if name is not None:
        return name
    agency = tenant.manifest.agency(code)
    return agency.name if agency is not None else code


def request_entry(
    tenant: TenantSnapshot,
    row: ServiceRequest,
    language: str,
    *,
    events: Sequence[StatusEvent] | None = None,
) -> dict[str, Any]:
    """Build one request as GET requests shows it. Passing `events` adds the extensions."""
    profile = profile_for(tenant)
    service = tenant.services.get(row.service_code)
    lat, lon = _public_point(service, row)
    entry: dict[str, Any] = {
        "service_request_id": row.id,
        "status": profile.open311_status(row.status),
        "status_notes": profile.status_text(row.status, row.resolution, language),
        "service_name": profile.service_name(service, language) if service else row.service_code,
        "service_code": row.service_code,
        "description": None,
        "agency_responsible": _agency_name(tenant, row.agency_code),
        "service_notice": None,
        "requested_datetime": isoformat(row.requested_at),
        "updated_datetime": isoformat(row.updated_at),
        "expected_datetime": isoformat(row.expected_at),
        "address": None,
        "address_id": None,
        "zipcode": _public_zipcode(service, row),
        "lat": lat,
        "long": lon,
        "media_url": None,
    }
    if events is not None:
        entry["extended_attributes"] = {
            "status_detail": row.status,
            "resolution": row.resolution,
            "duplicate_of": row.duplicate_of,
            "closed_datetime": isoformat(row.closed_at),
            "channel": row.channel,
        }
        entry["notes"] = [
            {
                "datetime": isoformat(event.at),
                "status": profile.open311_status(event.status),
                "status_detail": event.status,
                "type": event.channel,
                "summary": profile.status_text(event.status, event.resolution, language),
            }
            for event in events
        ]
    return entry


def discovery(base_url: str, tenant: TenantSnapshot | None, changeset: str) -> dict:
    return {
        "changeset": changeset,
        "contact": f"{tenant.name} 311" if tenant else "Regional 311 hub operator",
        "key_service": "API keys are issued by the hub operator for each jurisdiction.",
        "endpoints": [
            {
                "specification": SPEC_URL,
                "url": base_url,
                "changeset": changeset,
                "type": "production",
                "formats": ["text/xml", "application/json"],
            }
        ],
    }
