"""Writers for anonymized open-data exports (CSV and GeoJSON) and their audit entry.

Each export writes a sidecar `<file>.meta.json` (`file_metadata`) that states the file's format
version, when and for which tenant it was made, its date range, k and suppression counts, its
kind of ids, its free-text policy and each service's location rule. A GeoJSON export carries
the same document in a top-level `metadata` member too. docs/privacy.md describes the columns.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from hub.core.clock import isoformat
from privacy.anonymize import AnonymizedExport
from privacy.audit import audit

ExportFormat = Literal["csv", "geojson"]
# Name and version of the file format. Bump the version when a column is added, removed,
# renamed or changes meaning.
FORMAT_NAME = "hub-open-data"
FORMAT_VERSION = 1
CSV_COLUMNS = (
    "id",
    "service_code",
    "status",
    "time_bucket",
    "location_cell",
    "lat",
    "lon",
    "district",
    "description",
)
# A GeoJSON feature carries `lat` and `lon` as its Point geometry and the rest as properties.
GEOJSON_PROPERTIES = tuple(name for name in CSV_COLUMNS if name not in ("lat", "lon"))
ACTION_OPEN_DATA_EXPORT = "export.open_data"


def file_metadata(export: AnonymizedExport, fmt: ExportFormat) -> dict[str, Any]:
    """Return the document that describes one export file."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "file_format": fmt,
        "columns": list(CSV_COLUMNS if fmt == "csv" else GEOJSON_PROPERTIES),
        "tenant_id": export.tenant_id,
        "generated_at": isoformat(export.generated_at),
        "date_range": {
            "first_time_bucket": export.first_time_bucket,
            "last_time_bucket": export.last_time_bucket,
        },
        **export.metadata(),
        "location_rules": export.location_rules(),
    }


def write_export(export: AnonymizedExport, path: Path, fmt: ExportFormat) -> list[Path]:
    """Write `export` to `path` in `fmt` and its `.meta.json` beside it, and return both paths."""
    if fmt not in ("csv", "geojson"):
        raise ValueError(f"unknown export format {fmt!r}; use csv or geojson")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = file_metadata(export, fmt)
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(export.records)
    else:
        document = {
            "type": "FeatureCollection",
            "metadata": metadata,
            "features": [_feature(record) for record in export.records],
        }
        path.write_text(json.dumps(document, ensure_ascii=False) + "\n", encoding="utf-8")
    meta = path.with_name(path.name + ".meta.json")
    meta.write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [path, meta]


def _feature(record: dict[str, Any]) -> dict[str, Any]:
    geometry = None
    if record.get("lat") is not None and record.get("lon") is not None:
        geometry = {"type": "Point", "coordinates": [record["lon"], record["lat"]]}
    properties = {name: record.get(name) for name in GEOJSON_PROPERTIES}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def file_digests(paths: Sequence[Path]) -> dict[str, list[str]]:
    """Return the names of `paths` and the SHA-256 (hex) of each, in the same order."""
    digests = []
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests.append(digest.hexdigest())
    return {"files": [path.name for path in paths], "sha256": digests}


def record_export(
    session: Session,
    tenant_id: str,
    *,
    actor: str,
    export: AnonymizedExport,
    fmt: str,
    files: Sequence[Path],
) -> dict[str, list[str]]:
    """Write the audit entry for an open-data export: its k, suppression counts and free-text
    mode, and the name and SHA-256 of each file written, so a file can be tied to its entry.
    Return the names and digests."""
    digests = file_digests(files)
    audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=ACTION_OPEN_DATA_EXPORT,
        details={"format": fmt, **export.metadata(), **digests},
    )
    return digests
