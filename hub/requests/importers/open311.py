"""Open311 GeoReport v2 `requests.json` (the response of GET requests), from any city.

Times are ISO 8601 and normally carry an offset; a few cities omit it, and then they are read
as the tenant's local time. `service_code` is tried against the tenant's catalog before the
`service_name`.
"""

from __future__ import annotations

from typing import Any

from hub.core.errors import ErrorCollector
from hub.requests.importers.formats import (
    ExportFormat,
    SourceRecord,
    closed_resolution,
    coordinates,
    iso_time,
    map_status,
    required_text,
    text,
)
from hub.requests.importers.localtime import LocalTimes

STATUSES: dict[str, tuple[str, str | None]] = {
    "open": ("submitted", None),
    "closed": ("closed", None),
}


class Open311Json(ExportFormat):
    name = "open311-json"
    source = "open311-import"
    container = "json"
    label = "an Open311 GeoReport v2 requests.json (a JSON array of service requests)"
    category_column = "service_name"
    required_columns = ()
    json_required = ("service_request_id", "status", "requested_datetime")

    def parse(self, row: dict[str, Any], times: LocalTimes, errors: ErrorCollector) -> SourceRecord:
        source_id = errors.check(required_text, row, "service_request_id")
        mapped = errors.check(map_status, text(row, "status"), "status", STATUSES)
        status, resolution = mapped or (None, None)
        note = text(row, "status_notes")
        if status == "closed":
            resolution = closed_resolution(note)

        service_code = text(row, "service_code")
        category = text(row, "service_name") or errors.check(required_text, row, "service_code")
        requested_at = errors.check(iso_time, row, "requested_datetime", times, required=True)
        located = errors.check(coordinates, row.get("lat"), row.get("long"), "lat/long")
        lat, lon = located or (None, None)
        updated_at = errors.check(iso_time, row, "updated_datetime", times)
        return SourceRecord(
            position=0,
            source_id=source_id,
            category=category,
            service_code=service_code,
            status=status,
            resolution=resolution,
            requested_at=requested_at,
            updated_at=updated_at,
            closed_at=updated_at if status == "closed" else None,
            expected_at=errors.check(iso_time, row, "expected_datetime", times),
            lat=lat,
            lon=lon,
            address=text(row, "address"),
            zipcode=text(row, "zipcode"),
            description=text(row, "description"),
            status_note=note,
            media_url=text(row, "media_url"),
            channel="open311",
        )
