"""Category mapping tries aliases, codes, names and the built-in table before the fallback."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from hub.core.errors import InvalidInput
from hub.requests.importers import FORMATS
from hub.requests.importers.formats import RowError, SourceRecord
from hub.requests.importers.mapping import CategoryMapper


def service(code: str, name: str) -> SimpleNamespace:
    return SimpleNamespace(code=code, names={"en": name, "es": name})


def snapshot(services: dict[str, str], aliases: dict[str, list[str]]) -> SimpleNamespace:
    specs = [SimpleNamespace(code=code, aliases=aliases.get(code, [])) for code in services]
    return SimpleNamespace(
        id="city",
        manifest=SimpleNamespace(services=specs),
        services={code: service(code, name) for code, name in services.items()},
    )


def record(category: str, *, subcategory: str | None = None, code: str | None = None):
    return SourceRecord(
        position=1,
        source_id="1",
        category=category,
        subcategory=subcategory,
        service_code=code,
        status="submitted",
        requested_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


CATALOG = {
    "HEAT_HOT_WATER": "Heat or hot water",
    "noise": "Noise",
    "street-light-condition": "Broken street light",
    "PARKING": "Parking complaint",
    "other": "Other",
}
ALIASES = {"HEAT_HOT_WATER": ["HEAT/HOT WATER", "heating"]}

# (format, category, subcategory, source code, expected code, mapped)
CASES = [
    ("nyc-csv", "HEATING", None, None, "HEAT_HOT_WATER", True),  # alias, any case
    ("nyc-csv", "noise", None, None, "noise", True),  # code equals category
    ("nyc-csv", "Street Light Condition", None, None, "street-light-condition", True),  # slug
    ("nyc-csv", "parking complaint", None, None, "PARKING", True),  # service name
    ("nyc-csv", "Noise - Residential", None, None, "noise", True),  # built-in table
    ("sf-csv", "Sewer Issues", "heating", None, "HEAT_HOT_WATER", True),  # subcategory first
    ("open311-json", "Anything", None, "PARKING", "PARKING", True),  # source's own code
    ("nyc-csv", "Taxi Complaint", None, None, "other", False),  # fallback
]


@pytest.mark.parametrize(("name", "category", "sub", "code", "expected", "mapped"), CASES)
def test_mapping_order(name, category, sub, code, expected, mapped):
    mapper = CategoryMapper(snapshot(CATALOG, ALIASES), FORMATS[name])
    result = mapper.resolve(record(category, subcategory=sub, code=code), "column")
    assert result == (expected, mapped)


def test_no_fallback_rejects_with_category():
    catalog = {k: v for k, v in CATALOG.items() if k != "other"}
    mapper = CategoryMapper(snapshot(catalog, ALIASES), FORMATS["sf-csv"])
    with pytest.raises(RowError) as caught:
        mapper.resolve(record("Sewer Issues", subcategory="Odor"), "Category")
    assert caught.value.reason == "unmapped_category"
    assert caught.value.column == "Category"
    assert "'Sewer Issues / Odor'" in caught.value.message


def test_explicit_fallback_wins_over_other():
    mapper = CategoryMapper(snapshot(CATALOG, ALIASES), FORMATS["nyc-csv"], fallback="noise")
    assert mapper.resolve(record("Taxi Complaint"), "column") == ("noise", False)


def test_unknown_fallback_is_invalid_input():
    with pytest.raises(InvalidInput) as caught:
        CategoryMapper(snapshot(CATALOG, ALIASES), FORMATS["nyc-csv"], fallback="nope")
    assert "'nope'" in caught.value.message
    assert "HEAT_HOT_WATER" in caught.value.message
