"""San Francisco 311 cases (DataSF "Case Data from SF311") as CSV.

Headers come spaced (`Status Notes`) from DataSF or dotted (`Status.Notes`) after a round trip
through R, sometimes with an unnamed row-index column first. Both normalize to the same keys.
Times are US-style local Pacific time; `Point` is `(lat, lon)` text.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hub.core.errors import ErrorCollector
from hub.requests.importers.formats import (
    ExportFormat,
    RowError,
    SourceRecord,
    channel_of,
    closed_resolution,
    coordinates,
    local_time,
    map_status,
    required_text,
    text,
)
from hub.requests.importers.localtime import LocalTimes

TIME_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M", "%Y-%m-%dT%H:%M:%S.%f")

STATUSES: dict[str, tuple[str, str | None]] = {
    "open": ("submitted", None),
    "pending": ("acknowledged", None),
    "closed": ("closed", None),
}

CHANNELS = {
    "voice in": "phone",
    "open311": "mobile",
    "web self service": "web",
    "twitter": "social",
    "e-mail in": "email",
    "mail in": "mail",
    "integrated agency": "agency",
    "other department": "agency",
}

CATEGORIES = {
    "street and sidewalk cleaning": "sanitation",
    "litter receptacles": "sanitation",
    "graffiti public property": "graffiti",
    "graffiti private property": "graffiti",
    "illegal postings": "graffiti",
    "abandoned vehicle": "abandoned_vehicle",
    "streetlights": "streetlight",
    "tree maintenance": "tree",
    "street defects": "pothole",
    "sewer issues": "sewer",
    "catch basin maintenance": "sewer",
    "sidewalk or curb": "sidewalk",
    "blocked street or sidewalk": "sidewalk",
    "sign repair": "street_sign",
    "noise report": "noise",
    "residential building request": "building",
    "damaged property": "damaged_property",
}

REQUIRED_COLUMNS = ("CaseID", "Opened", "Closed", "Status", "Category", "Address", "Point")

# DataSF writes this in `Address` for cases with no location.
_NO_ADDRESS = "not associated with a specific address"


def _point(raw: str | None) -> tuple[float | None, float | None]:
    if raw is None:
        return None, None
    inner = raw.strip().removeprefix("(").removesuffix(")")
    parts = [part.strip() for part in inner.split(",")]
    if len(parts) != 2:
        raise RowError("Point", "invalid_coordinates", "Point is not '(lat, lon)'")
    return coordinates(parts[0], parts[1], "Point")


def _address(row: dict[str, Any]) -> str | None:
    address = text(row, "Address")
    if address is None or address.lower().startswith(_NO_ADDRESS):
        return None
    return address


class SfCsv(ExportFormat):
    name = "sf-csv"
    source = "sf311"
    container = "csv"
    label = "the San Francisco 311 cases CSV export (DataSF 'Case Data from SF311')"
    category_column = "Category"
    required_columns = REQUIRED_COLUMNS
    categories: ClassVar[dict[str, str]] = CATEGORIES

    def parse(self, row: dict[str, Any], times: LocalTimes, errors: ErrorCollector) -> SourceRecord:
        source_id = errors.check(required_text, row, "CaseID")
        mapped = errors.check(map_status, text(row, "Status"), "Status", STATUSES)
        status, resolution = mapped or (None, None)
        note = text(row, "Status Notes")
        if status == "closed":
            resolution = closed_resolution(note)

        requested_at = errors.check(local_time, row, "Opened", TIME_FORMATS, times, required=True)
        lat, lon = errors.check(_point, text(row, "Point")) or (None, None)
        request_type = text(row, "Request Type")
        details = text(row, "Request Details")
        description = " - ".join(part for part in (request_type, details) if part) or None
        return SourceRecord(
            position=0,
            source_id=source_id,
            category=errors.check(required_text, row, "Category"),
            subcategory=request_type,
            status=status,
            resolution=resolution,
            requested_at=requested_at,
            closed_at=errors.check(local_time, row, "Closed", TIME_FORMATS, times),
            updated_at=errors.check(local_time, row, "Updated", TIME_FORMATS, times),
            lat=lat,
            lon=lon,
            address=_address(row),
            description=description,
            status_note=note,
            media_url=text(row, "Media URL"),
            channel=channel_of(text(row, "Source"), CHANNELS),
        )
