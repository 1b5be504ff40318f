"""The demo's replay of real exports: rows become Open311 forms for the tenant's catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_support import onboard_example
from sqlalchemy import Engine

from hub.cli.demo.receiver import AgencyReceiver
from hub.cli.demo.replay import export_forms
from tenants.manifest import example_paths, load_manifest
from tenants.registry import invalidate_cache


@pytest.mark.parametrize(
    ("manifest_name", "relative_path", "format_name"),
    [
        ("boston.yaml", "311_records/boston/boston311-100.csv", "boston-csv"),
        ("new-york-city.yaml", "311_records/nyc/nyc311-100.csv", "nyc-csv"),
    ],
)
def test_replay_forms_use_catalog_codes(
    configured_db: Engine,
    receiver: AgencyReceiver,
    shared_data: Path,
    manifest_name: str,
    relative_path: str,
    format_name: str,
) -> None:
    invalidate_cache()
    onboard_example(configured_db, receiver, manifest_name)
    manifest = load_manifest(next(p for p in example_paths() if p.name == manifest_name))

    forms, skipped = export_forms(
        shared_data / relative_path,
        format_name,
        manifest,
        jurisdiction_id=manifest.jurisdiction_id,
        api_key="key",
        limit=40,
        seed=1,
    )

    codes = {service.code for service in manifest.services}
    fields = [dict(form) for form in forms]
    assert forms
    assert len(forms) <= 40
    assert all(item["service_code"] in codes for item in fields)
    assert all(item["jurisdiction_id"] == manifest.jurisdiction_id for item in fields)
    assert all(-90 <= float(item["lat"]) <= 90 for item in fields)
    assert all(-180 <= float(item["long"]) <= 180 for item in fields)
    assert all(item["description"] for item in fields)
    assert all(count > 0 for count in skipped.values())
