"""Coordinate checks, the service-area test, public points and attribute validation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from hub.core.errors import InvalidInput, InvalidInputGroup
from hub.requests import geo
from hub.requests.catalog import ServiceArea, open_data_rule
from hub.requests.validation import check_attributes, check_media_url, check_text, parse_datetime
from tenants.geometry import Geometry

SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
        [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]],
    ],
}


@pytest.mark.parametrize(
    "lat,lon",
    [(91, 0), (-90.0001, 0), (0, 180.5), (0, -181), (math.nan, 0), (0, math.inf), (-math.inf, 0)],
)
def test_bad_coordinates_rejected(lat, lon):
    with pytest.raises(InvalidInput):
        geo.check_coordinates(lat, lon)


@pytest.mark.parametrize("lat,lon", [(90, 180), (-90, -180), (0, 0)])
def test_edge_coordinates_accepted(lat, lon):
    geo.check_coordinates(lat, lon)


def _area(geometry: dict) -> ServiceArea:
    prepared = Geometry(**geometry)
    return ServiceArea(prepared, prepared.bounds())


def test_area_contains_respects_holes():
    area = _area(SQUARE)
    assert area.contains(1, 1)
    assert not area.contains(5, 5)
    assert not area.contains(11, 5)
    assert not area.contains(-1, 5)


def test_multipolygon_area():
    area = _area(
        {
            "type": "MultiPolygon",
            "coordinates": [
                [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]],
                [[[5, 5], [6, 5], [6, 6], [5, 6], [5, 5]]],
            ],
        }
    )
    assert area.contains(0.5, 0.5)
    assert area.contains(5.5, 5.5)
    assert not area.contains(3, 3)


def test_distance_one_degree_latitude():
    assert geo.distance_m(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-3)


def test_cells_within_cover_radius():
    lat, lon = 40.0, -75.0
    cells = set(geo.cells_within(lat, lon, 300))
    assert geo.storage_cell(lat + 0.0025, lon) in cells


def test_public_point_rules():
    lat, lon = 40.123456, -75.654321
    assert geo.public_point(lat, lon, "exact", 8) == (lat, lon)
    assert geo.public_point(lat, lon, "withheld", 8) == (None, None)
    assert geo.public_point(lat, lon, "district", 8) == (None, None)
    snapped = geo.public_point(lat, lon, "h3", 7)
    assert snapped != (lat, lon)
    assert geo.distance_m(lat, lon, *snapped) < 3000


@pytest.mark.parametrize(
    "text",
    [
        "<b>bold</b>",
        "</p>",
        "<!-- c -->",
        "<?xml",
        "&lt;script&gt;",
        "&#60;",
        "a\x00b",
        "a\x1bb",
        "a\ufffeb",
        "a\uffffb",
    ],
)
def test_markup_and_controls_rejected(text):
    with pytest.raises(InvalidInput):
        check_text("description", text, max_chars=4000)


@pytest.mark.parametrize("text", ["a < b and c > d", "Fish & chips", "Línea 1\nLínea 2\t😀"])
def test_plain_text_accepted(text):
    check_text("description", text, max_chars=4000)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "ftp://x/y",
        "https://",
        "//x/y",
        "http://[::1",
        "http://[not-an-address]/photo.jpg",
    ],
)
def test_bad_media_urls(url):
    with pytest.raises(InvalidInput):
        check_media_url(url)


def test_https_media_url_accepted():
    check_media_url("https://example.org/photo.jpg")


@pytest.mark.parametrize("value", ["2024-01-31", "2024-01-31T09:00:00", "31/01/2024", ""])
def test_dates_without_offset_rejected(value):
    with pytest.raises(InvalidInput):
        parse_datetime("start_date", value)


def test_date_offset_kept():
    parsed = parse_datetime("start_date", "2024-01-31T09:00:00-05:00")
    assert parsed.utcoffset().total_seconds() == -5 * 3600


DEFINITION = [
    {"code": "size", "datatype": "number", "required": True},
    {"code": "kind", "datatype": "singlevaluelist", "values": [{"key": "a"}, {"key": "b"}]},
    {"code": "tags", "datatype": "multivaluelist", "values": [{"key": "x"}, {"key": "y"}]},
    {"code": "note", "datatype": "string", "variable": False},
]


def test_attributes_clean_set():
    clean = check_attributes("svc", DEFINITION, {"size": "3.5", "kind": "a", "tags": ["x", "y"]})
    assert clean == {"size": "3.5", "kind": "a", "tags": ["x", "y"]}


@pytest.mark.parametrize(
    "submitted",
    [
        {},
        {"size": ""},
        {"size": "nan"},
        {"size": "ten"},
        {"size": "1", "kind": "c"},
        {"size": "1", "kind": ["a", "b"]},
        {"size": "1", "tags": ["x", "z"]},
        {"size": "1", "note": "informational"},
        {"size": "1", "other": "1"},
    ],
)
def test_attribute_errors(submitted):
    with pytest.raises(InvalidInput):
        check_attributes("svc", DEFINITION, submitted)


def test_long_key_list_referred_to_definition():
    keys = [{"key": f"k{n}"} for n in range(12)]
    definition = [{"code": "kind", "datatype": "singlevaluelist", "values": keys}]
    with pytest.raises(InvalidInput) as caught:
        check_attributes("svc", definition, {"kind": "other"})
    assert caught.value.message == (
        "attribute[kind] is not one of the service's allowed keys; services/svc lists the 12 keys"
    )


def test_every_missing_attribute_named():
    definition = [*DEFINITION, {"code": "depth", "datatype": "number", "required": True}]
    with pytest.raises(InvalidInputGroup) as caught:
        check_attributes("svc", definition, {"kind": "a"})
    assert caught.value.messages == (
        "attribute[size] is required for service svc",
        "attribute[depth] is required for service svc",
    )


def test_every_attribute_problem_reported():
    submitted = {"other": "1", "kind": "c", "tags": ["x", "z", "w"]}
    with pytest.raises(InvalidInputGroup) as caught:
        check_attributes("svc", DEFINITION, submitted)

    messages = caught.value.messages
    assert len(messages) == 4
    assert messages[0].startswith("attribute[other] is not defined for service svc")
    assert messages[1] == "attribute[size] is required for service svc"
    assert (
        messages[2] == "attribute[kind] is not one of the service's allowed keys; use one of a, b"
    )
    # A list with two invalid keys gets one error.
    assert (
        messages[3] == "attribute[tags] is not one of the service's allowed keys; use one of x, y"
    )
    assert [error.field for error in caught.value.errors[1:]] == [
        "attribute[size]",
        "attribute[kind]",
        "attribute[tags]",
    ]


def test_attribute_messages_omit_values():
    submitted = {"size": "PRIVATE-1", "kind": "PRIVATE-2", "call me on 555 0100": "x"}
    with pytest.raises(InvalidInputGroup) as caught:
        check_attributes("svc", DEFINITION, submitted)

    assert len(caught.value.messages) == 3
    for message in caught.value.messages:
        assert "PRIVATE" not in message
        assert "555" not in message


def test_old_attribute_date_accepted():
    # A date-time attribute may name any year, such as when a building was put up.
    parsed = parse_datetime("attribute[built]", "1850-06-01T00:00:00Z")
    assert parsed.year == 1850


def test_sensitive_service_never_exact():
    sensitive = SimpleNamespace(
        open_data_location="exact", h3_resolution=8, location_sensitive=True
    )
    plain = SimpleNamespace(open_data_location="exact", h3_resolution=8, location_sensitive=False)
    assert open_data_rule(sensitive) == ("h3", 8)
    assert open_data_rule(plain) == ("exact", 8)
