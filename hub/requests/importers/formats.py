"""The parts every export format shares: the parsed record, row errors and value parsers.

A format turns one source row (a dict with normalized keys) into a `SourceRecord` in the hub's
terms, or raises `RowError` naming the column and what is wrong with it. Formats never touch the
database; the import service maps categories to the tenant's catalog and writes the rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from hub.core.errors import ErrorCollector, InvalidInput
from hub.requests.importers.localtime import LocalTimes
from hub.requests.importers.readers import ExportFile, FileFormatError, normalize_key


@dataclass(slots=True)
class SourceRecord:
    """One source row in the hub's terms. Times are UTC; text is as the source wrote it."""

    position: int
    source_id: str
    # The source's category text, mapped to a tenant service code by the import service.
    category: str
    status: str
    requested_at: datetime
    resolution: str | None = None
    # A service code the source states itself (Open311), tried before the category.
    service_code: str | None = None
    # A finer category under `category` (SF "Request Type"), tried before it.
    subcategory: str | None = None
    updated_at: datetime | None = None
    closed_at: datetime | None = None
    expected_at: datetime | None = None
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    zipcode: str | None = None
    description: str | None = None
    # The source's resolution or status text, stored encrypted as the closing event's note.
    status_note: str | None = None
    media_url: str | None = None
    channel: str = "import"


class RowError(InvalidInput):
    """A row that cannot be imported: the column, a stable reason code and a message.

    It is an `InvalidInput` whose `field` is the column and whose `code` is the reason, so an
    `ErrorCollector` gathers every problem of a row and raises them as an `InvalidInputGroup`.
    Messages may quote dates, statuses, ids and categories, never addresses, coordinates or
    free text, because the report is printed and logged.
    """

    def __init__(self, column: str, reason: str, message: str):
        super().__init__(message, code=reason, field=column)

    @property
    def column(self) -> str:
        return self.field or ""

    @property
    def reason(self) -> str:
        return self.code


class ExportFormat:
    """Base of the formats: the container, required columns and the row mapping."""

    name: ClassVar[str]
    # Value of `service_requests.source`. Formats of the same source share it, so importing the
    # NYC CSV and then the NYC JSON of the same requests stores each request once.
    source: ClassVar[str]
    # Description of the expected file, for error messages.
    label: ClassVar[str]
    container: ClassVar[str]  # "csv", "json" or "jsonl"
    # The column holding the category, named in "unmapped category" rejections.
    category_column: ClassVar[str]
    # Columns as the source names them; a CSV header must contain all of them. JSON exports
    # omit null fields, so there only `json_required` is checked on each record.
    required_columns: ClassVar[Sequence[str]]
    json_required: ClassVar[Sequence[str]] = ()
    # Source category (lower case) to a hub service code; see `hub.requests.importers.catalog`.
    categories: ClassVar[Mapping[str, str]] = {}

    def rows(self, export: ExportFile) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.container == "csv":
            keys, rows = export.csv_rows(self.label)
            self.check_columns(export, set(keys))
            return rows
        if self.container == "jsonl":
            return export.json_lines(self.label)
        return export.json_items(self.label)

    def check_columns(self, export: ExportFile, present: set[str]) -> None:
        missing = [name for name in self.required_columns if normalize_key(name) not in present]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            raise FileFormatError(
                f"{export.path.name} is missing the column(s) {names}; expected {self.label} "
                f"(run `hub import --help` for the formats)"
            )

    def parse(self, row: dict[str, Any], times: LocalTimes, errors: ErrorCollector) -> SourceRecord:
        """Return the row as a record, adding each value it cannot read to `errors`.

        A value that could not be read is None in the record, even where the field's type
        excludes None, so the caller may still check the rest of the row but must not import it.
        """
        raise NotImplementedError

    def parse_row(
        self,
        position: int,
        row: dict[str, Any],
        times: LocalTimes,
        errors: ErrorCollector | None = None,
    ) -> SourceRecord:
        """Return the row as a record, recording its problems in `errors`.

        Without `errors`, every problem of the row is raised together: one `RowError`, or an
        `InvalidInputGroup` of them.
        """
        collector = ErrorCollector() if errors is None else errors
        missing = set()
        for name in self.json_required:
            if normalize_key(name) not in row:
                collector.add(RowError(name, "missing_column", f"field {name!r} is missing"))
                missing.add(name)
        # A missing field is reported once, as missing, and not again as an empty value.
        found = ErrorCollector()
        record = self.parse(row, times, found)
        collector.errors.extend(error for error in found.errors if error.field not in missing)
        record.position = position
        if errors is None:
            collector.raise_any()
        return record


# -- value parsers shared by the formats --------------------------------------------------------

# C1 control characters. In real exports they appear where UTF-8 text was decoded as Latin-1
# and encoded again (NYC writes "Transportation\u00e2\u0080\u0099s" for "Transportation's").
_C1 = re.compile(r"[\x80-\x9f]")
# Control characters other than tab and line breaks, which intake rejects in free text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def repair_text(value: str) -> str:
    """Undo Latin-1 double encoding where it round-trips, and blank out control characters."""
    if _C1.search(value):
        try:
            value = value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return _CONTROL.sub(" ", value)


def text(row: Mapping[str, Any], column: str) -> str | None:
    """Return the column's text with surrounding spaces removed, or None when it is blank."""
    value = row.get(normalize_key(column))
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    value = repair_text(value).strip()
    return value or None


def required_text(row: Mapping[str, Any], column: str) -> str:
    value = text(row, column)
    if value is None:
        raise RowError(column, "missing_value", f"{column} is empty")
    return value


def local_time(
    row: Mapping[str, Any],
    column: str,
    formats: Sequence[str],
    times: LocalTimes,
    *,
    required: bool = False,
) -> datetime | None:
    """Parse a time in one of `formats`; without an offset it is local time (see localtime).

    A blank value is None, or a RowError when the time is `required`.
    """
    raw = _time_text(row, column, required)
    if raw is None:
        return None
    for pattern in formats:
        try:
            parsed = datetime.strptime(raw, pattern)
        except ValueError:
            continue
        return times.to_utc(parsed)
    expected = " or ".join(formats)
    raise RowError(column, "invalid_time", f"{column} {raw!r} does not match {expected}")


def iso_time(
    row: Mapping[str, Any], column: str, times: LocalTimes, *, required: bool = False
) -> datetime | None:
    """Parse an ISO 8601 time; one without an offset is local time. Blank is as in
    `local_time`."""
    raw = _time_text(row, column, required)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RowError(
            column, "invalid_time", f"{column} {raw!r} is not an ISO 8601 date and time"
        ) from None
    return times.to_utc(parsed)


def _time_text(row: Mapping[str, Any], column: str, required: bool) -> str | None:
    return required_text(row, column) if required else text(row, column)


def coordinates(lat_raw: Any, lon_raw: Any, column: str) -> tuple[float | None, float | None]:
    """Parse a latitude/longitude pair; both blank means no coordinates.

    The values are not quoted in errors because an exact point can identify a home.
    """
    lat_text = None if lat_raw is None else str(lat_raw).strip()
    lon_text = None if lon_raw is None else str(lon_raw).strip()
    if not lat_text and not lon_text:
        return None, None
    if not lat_text or not lon_text:
        raise RowError(column, "invalid_coordinates", f"{column} has only one of lat and long")
    try:
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise RowError(column, "invalid_coordinates", f"{column} is not a number") from None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise RowError(column, "invalid_coordinates", f"{column} is not a finite number")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise RowError(column, "invalid_coordinates", f"{column} is outside lat/long range")
    if lat == 0.0 and lon == 0.0:
        # Exports write (0, 0) for "no location"; no city's 311 area contains it.
        return None, None
    return lat, lon


def map_status(
    raw: str | None, column: str, table: Mapping[str, tuple[str, str | None]]
) -> tuple[str, str | None]:
    """Map a source status to (hub state, resolution) through the format's table."""
    if raw is None:
        raise RowError(column, "missing_value", f"{column} is empty")
    mapped = table.get(raw.strip().lower())
    if mapped is None:
        known = ", ".join(sorted(table))
        raise RowError(column, "unknown_status", f"{column} {raw!r} is not one of: {known}")
    return mapped


# Phrases in closing text that tell which resolution a closed request had. The first match
# wins; anything else closed is "fixed".
_RESOLUTION_HINTS = (
    ("duplicate", "duplicate"),
    ("cancel", "cancelled"),
    ("withdrawn", "cancelled"),
    ("not within", "not_ours"),
    ("referred to", "not_ours"),
    ("not necessary", "no_action"),
    ("no evidence", "no_action"),
    ("no violation", "no_action"),
    ("could not find", "no_action"),
    ("were gone", "no_action"),
    ("no action", "no_action"),
    ("case noted", "no_action"),
    ("invalid", "no_action"),
)


def closed_resolution(note: str | None) -> str:
    if note:
        lowered = note.lower()
        for phrase, resolution in _RESOLUTION_HINTS:
            if phrase in lowered:
                return resolution
    return "fixed"


def channel_of(raw: str | None, table: Mapping[str, str]) -> str:
    if raw is None:
        return "import"
    return table.get(raw.strip().lower(), "other")
