"""Build the stored columns of a new service request: encrypted personal data and location.

Intake through the API and the importers both create `service_requests` rows. This module
decides which columns hold ciphertext and how a point is published, so that both paths can
share one definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hub.requests import geo
from hub.requests.catalog import CatalogService, TenantSnapshot, district_at, open_data_rule
from privacy.fields import FieldCipher

REQUESTS_TABLE = "service_requests"
EVENTS_TABLE = "status_events"


@dataclass
class PersonalFields:
    """The personal data of one request, in plain text, before encryption."""

    description: str | None = None
    address: str | None = None
    address_id: str | None = None
    account_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    media_url: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def public_location(
    tenant: TenantSnapshot, service: CatalogService, lat: float, lon: float
) -> tuple[float | None, float | None, str | None]:
    """Return the stored public `lat`, `lon` and `district` of an exact point.

    A location-sensitive service keeps only what its open-data rule publishes, and any other
    service its exact point. Under the `district` rule the district is found here, from the
    exact point, because a sensitive request's point is then only in ciphertext. Storing it
    keeps the open-data export free of decryption and keeps the district after the retention
    purge clears the ciphertext. NOTE: stored districts are not recomputed when a later
    manifest changes the districts.
    """
    rule, resolution = open_data_rule(service)
    district = district_at(tenant, lat, lon) if rule == "district" else None
    if service.location_sensitive:
        lat, lon = geo.public_point(lat, lon, rule, resolution)
    return lat, lon, district


def stored_cell(service: CatalogService, lat: float | None, lon: float | None) -> str | None:
    """Return the `h3_cell` stored for a point, used for duplicate search.

    A location-sensitive service stores none: the cell (about 0.1 km²) places the resident
    more precisely than its open-data rule publishes, so its requests are not linked as
    duplicates.
    """
    if lat is None or lon is None or service.location_sensitive:
        return None
    return geo.storage_cell(lat, lon)


def sealed_request_columns(
    cipher: FieldCipher,
    tenant: TenantSnapshot,
    service: CatalogService,
    request_id: str,
    personal: PersonalFields,
    lat: float | None,
    lon: float | None,
) -> dict[str, Any]:
    """Return the ciphertext, location and key-version columns of a new request row.

    Each ciphertext is bound to `request_id`, so the id must be the row's final primary key.
    For a location-sensitive service the exact point is stored only encrypted. The public
    columns come from `public_location`.
    """

    def seal(column: str, plaintext: str | None) -> bytes | None:
        return cipher.encrypt(REQUESTS_TABLE, column, request_id, plaintext)

    public_lat, public_lon, district, location_enc = lat, lon, None, None
    cell = stored_cell(service, lat, lon)
    if lat is not None and lon is not None:
        public_lat, public_lon, district = public_location(tenant, service, lat, lon)
        if service.location_sensitive:
            location_enc = seal("location_enc", json.dumps([lat, lon]))

    attributes = personal.attributes
    return {
        "lat": public_lat,
        "lon": public_lon,
        "district": district,
        "h3_cell": cell,
        "location_enc": location_enc,
        "description_enc": seal("description_enc", personal.description),
        "address_enc": seal("address_enc", personal.address),
        "address_id_enc": seal("address_id_enc", personal.address_id),
        "account_id_enc": seal("account_id_enc", personal.account_id),
        "first_name_enc": seal("first_name_enc", personal.first_name),
        "last_name_enc": seal("last_name_enc", personal.last_name),
        "email_enc": seal("email_enc", personal.email),
        "phone_enc": seal("phone_enc", personal.phone),
        "media_url_enc": seal("media_url_enc", personal.media_url),
        "attributes_enc": seal("attributes_enc", json.dumps(attributes, ensure_ascii=False))
        if attributes
        else None,
        "dek_version": cipher.dek_version,
    }


def seal_event_note(cipher: FieldCipher, event_id: int, note: str | None) -> bytes | None:
    """Return the ciphertext of a status event's note, bound to the event's id."""
    return cipher.encrypt(EVENTS_TABLE, "note_enc", str(event_id), note)
