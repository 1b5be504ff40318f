"""Open-data files: CSV and GeoJSON with a `.meta.json` that describes them."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime

from privacy.anonymize import AnonymizationPolicy, LocationRule, anonymize, policy_from_settings
from privacy.open_data import CSV_COLUMNS, FORMAT_VERSION, write_export


def records():
    """Five potholes on 5 March and five shelter reports on 7 March 2024, in Boston."""
    out = []
    for n in range(10):
        out.append(
            {
                "id": f"R{n}",
                "service_code": "pothole" if n < 5 else "shelter",
                "status": "submitted",
                "requested_at": datetime(2024, 3, 5 if n < 5 else 7, 14, n, tzinfo=UTC),
                "lat": 42.3601,
                "lon": -71.0589,
            }
        )
    return out


def export_of(free_text="withheld"):
    policy = AnonymizationPolicy(
        rules={"pothole": LocationRule("h3", 9), "shelter": LocationRule("withheld")},
        free_text=free_text,
    )
    return anonymize(records(), policy, tenant_id="boston")


def test_csv_meta_describes_file(tmp_path):
    path = tmp_path / "open.csv"
    files = write_export(export_of(), path, "csv")
    meta_path = tmp_path / "open.csv.meta.json"
    assert files == [path, meta_path]

    meta = json.loads(meta_path.read_text())
    assert meta["format"] == "hub-open-data"
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["file_format"] == "csv"
    assert meta["tenant_id"] == "boston"
    assert datetime.fromisoformat(meta["generated_at"]).tzinfo is not None
    assert meta["date_range"] == {
        "first_time_bucket": "2024-03-05T00:00:00+00:00",
        "last_time_bucket": "2024-03-07T00:00:00+00:00",
    }
    assert meta["k"] == 5
    assert meta["time_bucket"] == "day"
    assert meta["free_text"] == "withheld"
    assert meta["ids"] == "pseudonymous"
    assert meta["location_rules"]["services"] == {
        "pothole": {"location": "h3", "h3_resolution": 9},
        "shelter": {"location": "withheld"},
    }
    assert meta["location_rules"]["other_services"] == {"location": "h3", "h3_resolution": 8}
    assert meta["published_records"] == 10
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert meta["columns"] == list(CSV_COLUMNS)
    assert {row["location_cell"] for row in rows[5:]} == {"withheld"}


def test_geojson_has_meta_file(tmp_path):
    path = tmp_path / "open.geojson"
    files = write_export(export_of(free_text="redacted"), path, "geojson")
    meta_path = tmp_path / "open.geojson.meta.json"
    assert files == [path, meta_path]

    meta = json.loads(meta_path.read_text())
    document = json.loads(path.read_text())
    assert document["metadata"] == meta
    assert meta["file_format"] == "geojson"
    assert meta["free_text"] == "redacted"
    assert meta["columns"] == [name for name in CSV_COLUMNS if name not in ("lat", "lon")]
    features = document["features"]
    assert len(features) == 10
    assert all(set(feature["properties"]) == set(meta["columns"]) for feature in features)
    located = [feature for feature in features if feature["geometry"] is not None]
    assert len(located) == 5
    assert located[0]["geometry"]["type"] == "Point"


def test_sensitive_exact_rule_publishes_h3():
    services = [
        {"code": "pothole", "open_data_location": "exact", "h3_resolution": 7},
        {
            "code": "heat",
            "open_data_location": "exact",
            "h3_resolution": 7,
            "location_sensitive": True,
        },
    ]
    policy = policy_from_settings({}, services)
    assert policy.rule_for("pothole") == LocationRule("exact", 7)
    assert policy.rule_for("heat") == LocationRule("h3", 7)
