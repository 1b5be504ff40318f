"""Manifest warnings: likely mistakes that a valid manifest may contain, reported without
blocking."""

from __future__ import annotations

import copy

import pytest
import yaml

from tenants.manifest import example_paths, parse_manifest
from tenants.manifest_warnings import manifest_warnings

EXAMPLES = {path.stem: path for path in example_paths()}

# Chicago's Loop as [lon, lat] positions.
CHICAGO_RING = [[-87.70, 41.85], [-87.55, 41.85], [-87.55, 41.95], [-87.70, 41.95], [-87.70, 41.85]]


def _chicago() -> dict:
    data = yaml.safe_load(EXAMPLES["boston"].read_text(encoding="utf-8"))
    data["timezone"] = "America/Chicago"
    data["languages"] = ["en", "es"]
    for service in data["services"]:
        service["names"] = {"en": service["names"]["en"], "es": service["names"].get("es", "x")}
        service["descriptions"] = {}
    data["profile"] = {}
    data["service_area"] = {"type": "Polygon", "coordinates": [CHICAGO_RING]}
    data["districts"] = []
    for service in data["services"]:
        service.pop("open_data", None)
    data["alerts"].pop("geocode_zones", None)
    data["calendar"]["holidays"] = [{"date": "2026-12-25"}]
    return data


def _warnings(data: dict) -> list[str]:
    return manifest_warnings(parse_manifest(copy.deepcopy(data)))


def test_clean_manifest_has_no_warnings():
    assert _warnings(_chicago()) == []


def test_swapped_positions_warned():
    data = _chicago()
    data["service_area"]["coordinates"] = [[[lat, lon] for lon, lat in CHICAGO_RING]]
    warnings = _warnings(data)
    assert len(warnings) == 1
    assert warnings[0].startswith("service_area.coordinates: the area's center (41.90, -87.62)")
    assert "GeoJSON positions are [lon, lat]" in warnings[0]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_not_warned_of_swap(name):
    warnings = manifest_warnings(parse_manifest(yaml.safe_load(EXAMPLES[name].read_text())))
    assert not any(w.startswith("service_area") for w in warnings)


def test_missing_name_language_warned():
    data = _chicago()
    del data["services"][2]["names"]["es"]
    code = data["services"][2]["code"]
    assert _warnings(data) == [
        f"services[].names: 1 service(s) have no text in 'es' ({code}), so residents who read "
        "es see the en text; add names.es to each"
    ]


def test_partial_descriptions_warned():
    data = _chicago()
    data["services"][0]["descriptions"] = {"en": "Holes in the street."}
    warnings = _warnings(data)
    assert len(warnings) == 1
    assert warnings[0].startswith("services[].descriptions: 1 service(s) have no text in 'es'")


def test_language_without_texts_warned():
    data = _chicago()
    data["languages"] = ["en", "es", "pl"]
    for service in data["services"]:
        service["names"]["pl"] = "tekst"
    assert _warnings(data) == [
        "languages: the hub has no built-in status texts in 'pl', so residents who read pl get "
        "them in English; add them under profile.status_texts.pl"
    ]


def test_regional_tag_uses_language_texts():
    data = _chicago()
    data["languages"] = ["en", "es-US"]
    for service in data["services"]:
        service["names"]["es-US"] = service["names"].pop("es")
    assert _warnings(data) == []


def test_repeated_holiday_warned():
    data = _chicago()
    data["calendar"]["holidays"] = [
        {"date": "2026-12-25"},
        {"date": "2026-07-04"},
        {"date": "2026-12-25", "name": "Christmas"},
    ]
    assert _warnings(data) == [
        "calendar.holidays[2].date: 2026-12-25 is listed twice (first at [0]); remove one"
    ]


def test_unread_feature_setting_warned():
    """The privacy, alerts and overflow sections accept keys the hub does not name, so a
    misspelt setting gets a warning with the close name, and the keys the alert channels
    read themselves get none."""
    data = _chicago()
    data["privacy"] = {"retention_day": {"personal_data": 30}}
    data.setdefault("alerts", {})["providers"] = {"smtp": {"host": "mail.example.org"}}
    data["alerts"]["public_base_url"] = "https://311.example.org"

    warnings = manifest_warnings(parse_manifest(data))

    unread = [w for w in warnings if "reads no setting" in w]
    assert unread == [
        "privacy.retention_day: the hub reads no setting of this name, so it has no effect "
        "and the defaults apply; did you mean retention_days?"
    ]
