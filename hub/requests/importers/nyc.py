"""NYC 311 Service Requests (NYC Open Data dataset erm2-nwe9) as CSV or JSON.

The CSV export has 41 columns with spaced headers (`Unique Key`, `Created Date`) and US-style
local times (`10/31/2016 11:07:15 PM`). The JSON comes in two shapes that normalize to the same
keys: the CSV's records as a JSON array, and the raw Socrata API array (`unique_key`,
`2012-11-20T07:50:59.000`, every value a string, null fields omitted, a GeoJSON `location`).
Both are local New York time without an offset.
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

TIME_FORMATS = (
    "%m/%d/%Y %I:%M:%S %p",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
)

STATUSES: dict[str, tuple[str, str | None]] = {
    "open": ("submitted", None),
    "unspecified": ("submitted", None),
    "draft": ("submitted", None),
    "unassigned": ("submitted", None),
    "assigned": ("acknowledged", None),
    "pending": ("acknowledged", None),
    "email sent": ("acknowledged", None),
    "started": ("in_progress", None),
    "in progress": ("in_progress", None),
    "closed": ("closed", None),
    "cancel": ("closed", "cancelled"),
    "cancelled": ("closed", "cancelled"),
}

CHANNELS = {
    "phone": "phone",
    "online": "web",
    "mobile": "mobile",
    "other": "other",
    "unknown": "import",
}

CATEGORIES = {
    "noise": "noise",
    "noise - residential": "noise",
    "noise - commercial": "noise",
    "noise - street/sidewalk": "noise",
    "noise - vehicle": "noise",
    "noise - park": "noise",
    "noise - helicopter": "noise",
    "noise - house of worship": "noise",
    "illegal parking": "parking",
    "blocked driveway": "parking",
    "derelict vehicle": "abandoned_vehicle",
    "derelict vehicles": "abandoned_vehicle",
    "abandoned vehicle": "abandoned_vehicle",
    "derelict bicycle": "abandoned_vehicle",
    "street light condition": "streetlight",
    "traffic signal condition": "traffic_signal",
    "street condition": "pothole",
    "sidewalk condition": "sidewalk",
    "graffiti": "graffiti",
    "dirty conditions": "sanitation",
    "sanitation condition": "sanitation",
    "missed collection (all materials)": "sanitation",
    "sweeping/missed-inadequate": "sanitation",
    "litter basket / request": "sanitation",
    "request large bulky item collection": "bulk_item",
    "illegal dumping": "illegal_dumping",
    "heat/hot water": "heat",
    "heating": "heat",
    "water system": "water",
    "water leak": "water",
    "sewer": "sewer",
    "damaged tree": "tree",
    "overgrown tree/branches": "tree",
    "new tree request": "tree",
    "rodent": "rodent",
    "unsanitary condition": "housing",
    "paint/plaster": "housing",
    "paint - plaster": "housing",
    "plumbing": "housing",
    "door/window": "housing",
    "flooring/stairs": "housing",
    "electric": "housing",
    "appliance": "housing",
    "general": "housing",
    "nonconst": "housing",
    "general construction": "housing",
    "general construction/plumbing": "building",
    "building/use": "building",
    "construction": "building",
    "elevator": "building",
    "street sign - missing": "street_sign",
    "street sign - damaged": "street_sign",
    "street sign - dangling": "street_sign",
}

# Columns that every NYC CSV export since 2010 has; the rest are read when present.
REQUIRED_COLUMNS = (
    "Unique Key",
    "Created Date",
    "Closed Date",
    "Complaint Type",
    "Descriptor",
    "Status",
    "Incident Address",
    "Incident Zip",
    "Latitude",
    "Longitude",
)


def _location(row: dict[str, Any]) -> tuple[float | None, float | None]:
    lat, lon = coordinates(row.get("latitude"), row.get("longitude"), "Latitude/Longitude")
    if lat is not None:
        return lat, lon
    # The Socrata JSON may carry only the GeoJSON point (longitude first).
    point = row.get("location")
    if isinstance(point, dict) and isinstance(point.get("coordinates"), list | tuple):
        pair = point["coordinates"]
        if len(pair) == 2:
            return coordinates(pair[1], pair[0], "Location")
    return None, None


def _address(row: dict[str, Any]) -> str | None:
    street = text(row, "Incident Address")
    if street is None:
        first, second = text(row, "Intersection Street 1"), text(row, "Intersection Street 2")
        if first and second:
            street = f"{first} & {second}"
    if street is None:
        return None
    city = text(row, "City")
    return f"{street}, {city}" if city else street


class NycFormat(ExportFormat):
    source = "nyc311"
    category_column = "Complaint Type"
    required_columns = REQUIRED_COLUMNS
    json_required = ("Unique Key", "Created Date", "Complaint Type", "Status")
    categories: ClassVar[dict[str, str]] = CATEGORIES

    def parse(self, row: dict[str, Any], times: LocalTimes, errors: ErrorCollector) -> SourceRecord:
        source_id = errors.check(required_text, row, "Unique Key")
        mapped = errors.check(map_status, text(row, "Status"), "Status", STATUSES)
        status, resolution = mapped or (None, None)
        note = text(row, "Resolution Description")
        if status == "closed" and resolution is None:
            resolution = closed_resolution(note)

        requested_at = errors.check(
            local_time, row, "Created Date", TIME_FORMATS, times, required=True
        )
        lat, lon = errors.check(_location, row) or (None, None)
        return SourceRecord(
            position=0,
            source_id=source_id,
            category=errors.check(required_text, row, "Complaint Type"),
            status=status,
            resolution=resolution,
            requested_at=requested_at,
            closed_at=errors.check(local_time, row, "Closed Date", TIME_FORMATS, times),
            updated_at=errors.check(
                local_time, row, "Resolution Action Updated Date", TIME_FORMATS, times
            ),
            expected_at=errors.check(local_time, row, "Due Date", TIME_FORMATS, times),
            lat=lat,
            lon=lon,
            address=_address(row),
            zipcode=text(row, "Incident Zip"),
            description=text(row, "Descriptor"),
            status_note=note,
            channel=channel_of(text(row, "Open Data Channel Type"), CHANNELS),
        )


class NycCsv(NycFormat):
    name = "nyc-csv"
    container = "csv"
    label = "the NYC 311 Service Requests CSV export (NYC Open Data, 41 columns)"


class NycJson(NycFormat):
    name = "nyc-json"
    container = "json"
    label = (
        "a JSON array of NYC 311 Service Requests (the Socrata API export or the CSV's "
        "records as JSON)"
    )
