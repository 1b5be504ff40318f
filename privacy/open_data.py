"""Writers for anonymized open-data exports (CSV and GeoJSON) and their audit entry.

A CSV export gets a sidecar `<file>.meta.json` stating its k and suppression counts; a GeoJSON
export carries the same figures in a top-level `metadata` member.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from privacy.anonymize import AnonymizedExport
from privacy.audit import audit

ExportFormat = Literal["csv", "geojson"]
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
ACTION_OPEN_DATA_EXPORT = "export.open_data"


def write_export(export: AnonymizedExport, path: Path, fmt: ExportFormat) -> list[Path]:
    """Write `export` to `path` in `fmt`; return the files written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(export.records)
        meta = path.with_name(path.name + ".meta.json")
        meta.write_text(json.dumps(export.metadata(), indent=2) + "\n", encoding="utf-8")
        return [path, meta]
    if fmt == "geojson":
        features = [_feature(record) for record in export.records]
        document = {
            "type": "FeatureCollection",
            "metadata": export.metadata(),
            "features": features,
        }
        path.write_text(json.dumps(document, ensure_ascii=False) + "\n", encoding="utf-8")
        return [path]
    raise ValueError(f"unknown export format {fmt!r}; use csv or geojson")


def _feature(record: dict[str, Any]) -> dict[str, Any]:
    geometry = None
    if record.get("lat") is not None and record.get("lon") is not None:
        geometry = {"type": "Point", "coordinates": [record["lon"], record["lat"]]}
    properties = {k: v for k, v in record.items() if k not in ("lat", "lon")}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def record_export(
    session: Session, tenant_id: str, *, actor: str, export: AnonymizedExport, fmt: str
) -> None:
    """Write the audit entry for an open-data export, with its k and suppression counts."""
    audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=ACTION_OPEN_DATA_EXPORT,
        details={"format": fmt, **export.metadata()},
    )
