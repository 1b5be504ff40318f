"""Catalog import from real Open311 service lists in JSON and XML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hub.core.errors import InvalidInput
from tenants.catalog_import import build_catalog
from tenants.manifest import parse_manifest


def _manifest_with(catalog: dict) -> dict:
    """A minimal manifest around an imported catalog, to check it validates as a whole."""
    agencies = catalog.get("agencies") or []
    return {
        "id": "imported-city",
        "jurisdiction_id": "imported.example.org",
        "name": "Imported City",
        "timezone": "America/New_York",
        "languages": ["en"],
        "service_area": {
            "type": "Polygon",
            "coordinates": [[[-71.2, 42.2], [-71.0, 42.2], [-71.0, 42.4], [-71.2, 42.2]]],
        },
        "services": catalog["services"],
        "agencies": agencies,
    }


def test_boston_services_json(shared_data: Path):
    result = build_catalog(shared_data / "open311/boston/services.json")
    codes = [s["code"] for s in result.services]
    assert result.source_format == "json"
    assert len(codes) == 118
    assert "REQPOTHL" in codes
    assert result.skipped == []
    pothole = next(s for s in result.services if s["code"] == "REQPOTHL")
    assert pothole["names"] == {"en": "Request for Pothole Repair"}
    assert pothole["agency"] == "COB_PWD_HWY"
    assert "Pothole" in pothole["keywords"]
    # Boston separates some keywords with semicolons, and mixes them with commas.
    bridge = next(s for s in result.services if s["keywords"][0] == "Bridge")
    assert bridge["keywords"] == ["Bridge", "Guard Rail", "Stair"]
    assert not any(";" in k for s in result.services for k in s.get("keywords", []))
    assert {"code": "COB_PWD_HWY", "name": "PWD-Highway"} in result.agencies
    # Boston's list marks its services as having definitions; none were given here.
    assert "REQPOTHL" in result.missing_definitions
    catalog = yaml.safe_load(result.to_yaml())
    manifest = parse_manifest(_manifest_with(catalog))
    assert manifest.agency_for("REQPOTHL") == "COB_PWD_HWY"


def test_san_francisco_services_xml(shared_data: Path):
    result = build_catalog(shared_data / "open311/ruby-open311-gem/services.xml")
    assert result.source_format == "xml"
    assert len(result.services) == 36
    cans = result.services[0]
    assert cans["code"] == "001"
    assert cans["names"] == {"en": "Cans Left Out 24x7"}
    assert cans["aliases"] == ["Cans_Left_Out_24x7"]
    assert cans["group"] == "Litter Receptacles"
    assert not cans["descriptions"]["en"].endswith("\n")
    assert "keywords" not in cans
    assert result.agencies == []
    parse_manifest(_manifest_with({"services": result.services}))


def test_spec_example_service_list(shared_data: Path):
    result = build_catalog(shared_data / "open311/open311status/service_list.json", language="en")
    assert [s["code"] for s in result.services] == ["001", "002", "003"]
    assert result.services[0]["keywords"] == ["lorem", "ipsum", "dolor"]
    parse_manifest(_manifest_with({"services": result.services}))


def test_xml_definition_adds_attributes(shared_data: Path, tmp_path: Path):
    services = tmp_path / "services.json"
    services.write_text(
        json.dumps([{"service_code": "DMV66", "service_name": "Vehicle", "metadata": True}]),
        encoding="utf-8",
    )
    definition = shared_data / "open311/ruby-open311-gem/service_definition.xml"
    result = build_catalog(services, definition_paths=[definition])
    attribute = result.services[0]["attributes"][0]
    assert attribute["code"] == "WHISHETN"
    assert attribute["datatype"] == "singlevaluelist"
    assert attribute["required"] is True
    assert attribute["values"][0] == {"key": "123", "names": {"en": "Ford"}}
    assert result.missing_definitions == []


def test_bad_entries_skipped_with_reason(tmp_path: Path):
    services = tmp_path / "services.json"
    services.write_text(
        json.dumps(
            [
                {"service_code": "OK1", "service_name": "Fine"},
                {"service_code": "OK1", "service_name": "Again"},
                {"service_code": "bad code", "service_name": "Spaces"},
                "not an object",
            ]
        ),
        encoding="utf-8",
    )
    result = build_catalog(services)
    assert [s["code"] for s in result.services] == ["OK1"]
    reasons = dict(result.skipped)
    assert "duplicate" in reasons["OK1"]
    assert "not a valid code" in reasons["bad code"]
    assert reasons["[3]"] == "entry is not an object"


def test_xml_entities_rejected(tmp_path: Path):
    path = tmp_path / "services.xml"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x "boom">]><services>&x;</services>',
        encoding="utf-8",
    )
    with pytest.raises(InvalidInput) as caught:
        build_catalog(path)
    assert "rejected" in caught.value.message


def test_not_a_service_list(tmp_path: Path):
    path = tmp_path / "services.json"
    path.write_text('{"service_code": "X"}', encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        build_catalog(path)
    assert "expected a list of services" in caught.value.message


@pytest.mark.parametrize(
    "name",
    ["open311status/requests_many.xml", "ruby-open311-gem/service_requests.xml"],
)
def test_request_lists_rejected(shared_data: Path, name: str):
    with pytest.raises(InvalidInput) as caught:
        build_catalog(shared_data / "open311" / name)
    assert "is neither <services> nor <service_definition>" in caught.value.message


def test_definition_of_unlisted_service(shared_data: Path):
    services = shared_data / "open311/open311status/service_list.json"
    definition = shared_data / "open311/ruby-open311-gem/service_definition.xml"
    with pytest.raises(InvalidInput) as caught:
        build_catalog(services, definition_paths=[definition])
    assert caught.value.message.startswith(f"{definition}: defines service 'DMV66'")
    assert f"not in {services}" in caught.value.message


def test_json_request_list_rejected(shared_data: Path):
    with pytest.raises(InvalidInput) as caught:
        build_catalog(shared_data / "open311/open311status/service_requests.json")
    assert "is a list of service requests" in caught.value.message
