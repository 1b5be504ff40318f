"""Boston 311 cases (Analyze Boston "311 Service Requests", the CRM export) as CSV or JSON lines.

Times are local Boston time as `2022-01-21 13:47:00`. Blank fields are often a single space.
Cases with no location carry the coordinates of City Hall Plaza, 42.3594, -71.0587, which the
importer treats as "no coordinates".
"""

from __future__ import annotations

from typing import Any, ClassVar

from hub.core.errors import ErrorCollector
from hub.requests.importers.formats import (
    ExportFormat,
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

TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f")

# The placeholder point of cases without a location (City Hall Plaza).
PLACEHOLDER_POINT = (42.3594, -71.0587)

STATUSES: dict[str, tuple[str, str | None]] = {
    "open": ("submitted", None),
    "closed": ("closed", None),
}

CHANNELS = {
    "constituent call": "phone",
    "citizens connect app": "mobile",
    "city worker app": "agency",
    "employee generated": "agency",
    "self service": "web",
    "twitter": "social",
    "maximo integration": "agency",
}

CATEGORIES = {
    "request for pothole repair": "pothole",
    "street light outages": "streetlight",
    "general lighting request": "streetlight",
    "traffic signal inspection": "traffic_signal",
    "graffiti removal": "graffiti",
    "pwd graffiti": "graffiti",
    "abandoned vehicles": "abandoned_vehicle",
    "parking enforcement": "parking",
    "requests for street cleaning": "sanitation",
    "empty litter basket": "sanitation",
    "improper storage of trash (barrels)": "sanitation",
    "missed trash/recycling/yard waste/bulk item": "sanitation",
    "ce collection": "sanitation",
    "schedule a bulk item pickup": "bulk_item",
    "schedule a bulk item pickup ss": "bulk_item",
    "sidewalk repair (make safe)": "sidewalk",
    "sidewalk cover / manhole": "sewer",
    "rodent activity": "rodent",
    "pest infestation - residential": "rodent",
    "pick up dead animal": "dead_animal",
    "needle pickup": "needle",
    "loud parties/music/people": "noise",
    "poor conditions of property": "building",
    "unsatisfactory living conditions": "housing",
    "unsatisfactory utilities - electrical  plumbing": "housing",
    "sign repair": "street_sign",
    "ground maintenance": "tree",
}

REQUIRED_COLUMNS = (
    "case_enquiry_id",
    "open_dt",
    "closed_dt",
    "case_status",
    "closure_reason",
    "case_title",
    "type",
    "location",
    "latitude",
    "longitude",
)


def _location(row: dict[str, Any]) -> tuple[float | None, float | None]:
    lat, lon = coordinates(row.get("latitude"), row.get("longitude"), "latitude/longitude")
    if (lat, lon) == PLACEHOLDER_POINT:
        return None, None
    return lat, lon


class BostonFormat(ExportFormat):
    source = "boston311"
    category_column = "type"
    required_columns = REQUIRED_COLUMNS
    json_required = ("case_enquiry_id", "open_dt", "case_status", "type")
    categories: ClassVar[dict[str, str]] = CATEGORIES

    def parse(self, row: dict[str, Any], times: LocalTimes, errors: ErrorCollector) -> SourceRecord:
        source_id = errors.check(required_text, row, "case_enquiry_id")
        mapped = errors.check(map_status, text(row, "case_status"), "case_status", STATUSES)
        status, resolution = mapped or (None, None)
        note = text(row, "closure_reason")
        if status == "closed":
            resolution = closed_resolution(note)

        requested_at = errors.check(local_time, row, "open_dt", TIME_FORMATS, times, required=True)
        lat, lon = errors.check(_location, row) or (None, None)
        zipcode = text(row, "location_zipcode")
        if zipcode is not None and zipcode.isdigit():
            # The JSON export stores ZIP codes as numbers, dropping the leading zero.
            zipcode = zipcode.zfill(5)
        return SourceRecord(
            position=0,
            source_id=source_id,
            category=errors.check(required_text, row, "type"),
            status=status,
            resolution=resolution,
            requested_at=requested_at,
            closed_at=errors.check(local_time, row, "closed_dt", TIME_FORMATS, times),
            expected_at=errors.check(local_time, row, "target_dt", TIME_FORMATS, times),
            lat=lat,
            lon=lon,
            address=text(row, "location"),
            zipcode=zipcode,
            description=text(row, "case_title"),
            status_note=note,
            media_url=text(row, "submittedphoto"),
            channel=channel_of(text(row, "source"), CHANNELS),
        )


class BostonCsv(BostonFormat):
    name = "boston-csv"
    container = "csv"
    label = "the Boston 311 Service Requests CSV export (Analyze Boston, CRM schema)"


class BostonJsonl(BostonFormat):
    name = "boston-jsonl"
    container = "jsonl"
    label = "Boston 311 Service Requests as JSON lines (one CRM-schema object per line)"
