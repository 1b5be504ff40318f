"""Coordinates: range checks, service-area tests, distances and the public location of a request.

Service areas are GeoJSON Polygon or MultiPolygon geometries in longitude/latitude order, as the
tenant manifest holds them. A `ServiceArea` is built once per geometry and cached, so the hot
intake path only runs a bounding-box test and, inside the box, an even-odd ray cast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import h3

from hub.core.errors import InvalidInput

EARTH_RADIUS_M = 6_371_008.8
# Resolution of the `h3_cell` column: cells of about 0.1 km², used for duplicate search.
STORAGE_H3_RESOLUTION = 9

Ring = tuple[tuple[float, float], ...]


def check_coordinates(lat: float, lon: float) -> None:
    """Raise InvalidInput unless `lat`/`lon` are finite WGS84 degrees within range."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise InvalidInput("lat and long must be finite numbers", code="invalid_location")
    if not -90.0 <= lat <= 90.0:
        raise InvalidInput(f"lat {lat} is outside [-90, 90]", code="invalid_location")
    if not -180.0 <= lon <= 180.0:
        raise InvalidInput(f"long {lon} is outside [-180, 180]", code="invalid_location")


def _ring_contains(ring: Ring, lon: float, lat: float) -> bool:
    # Even-odd rule: count edges that a ray running east from the point crosses.
    inside = False
    count = len(ring)
    j = count - 1
    for i in range(count):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat):
            x_cross = xi + (lat - yi) * (xj - xi) / (yj - yi)
            if lon < x_cross:
                inside = not inside
        j = i
    return inside


@dataclass(frozen=True)
class ServiceArea:
    """A prepared Polygon or MultiPolygon: each polygon is an outer ring and its holes."""

    polygons: tuple[tuple[Ring, ...], ...]
    bbox: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat

    def contains(self, lat: float, lon: float) -> bool:
        min_lon, min_lat, max_lon, max_lat = self.bbox
        if not (min_lon <= lon <= max_lon and min_lat <= lat <= max_lat):
            return False
        for rings in self.polygons:
            if not _ring_contains(rings[0], lon, lat):
                continue
            if not any(_ring_contains(hole, lon, lat) for hole in rings[1:]):
                return True
        return False


def _parse_ring(raw: Sequence[Sequence[float]]) -> Ring:
    return tuple((float(point[0]), float(point[1])) for point in raw)


@lru_cache(maxsize=256)
def _prepare(geometry_json: str) -> ServiceArea:
    geometry = json.loads(geometry_json)
    kind = geometry.get("type")
    if kind == "Polygon":
        raw_polygons = [geometry["coordinates"]]
    elif kind == "MultiPolygon":
        raw_polygons = geometry["coordinates"]
    else:
        raise ValueError(f"service area must be a Polygon or MultiPolygon, not {kind!r}")
    polygons = tuple(tuple(_parse_ring(ring) for ring in rings) for rings in raw_polygons)
    lons = [lon for rings in polygons for lon, _ in rings[0]]
    lats = [lat for rings in polygons for _, lat in rings[0]]
    return ServiceArea(polygons, (min(lons), min(lats), max(lons), max(lats)))


def prepare_area(geometry: dict[str, Any] | None) -> ServiceArea | None:
    """Return the prepared area for a GeoJSON geometry (cached by content), or None for none.

    A Feature is accepted too and its geometry used.
    """
    if not geometry:
        return None
    if geometry.get("type") == "Feature":
        geometry = geometry.get("geometry") or {}
    return _prepare(json.dumps(geometry, sort_keys=True))


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def storage_cell(lat: float, lon: float) -> str:
    return h3.latlng_to_cell(lat, lon, STORAGE_H3_RESOLUTION)


def cells_within(lat: float, lon: float, radius_m: float) -> list[str]:
    """Storage cells that may hold points within `radius_m` of the point (a superset)."""
    # Neighbouring resolution-9 cell centres are about 350 m apart (edge about 200 m), so
    # one ring per 300 m of radius, plus one, covers the circle.
    rings = 1 + int(radius_m // 300)
    return list(h3.grid_disk(storage_cell(lat, lon), rings))


def public_point(
    lat: float, lon: float, rule: str, h3_resolution: int
) -> tuple[float | None, float | None]:
    """Return the coordinates the public may see under an open-data location rule.

    `exact` keeps the point, `h3` moves it to the centre of its cell at `h3_resolution`, and
    `district` or `withheld` publish no coordinates.
    """
    if rule == "exact":
        return lat, lon
    if rule == "h3":
        cell = h3.latlng_to_cell(lat, lon, h3_resolution)
        centre_lat, centre_lon = h3.cell_to_latlng(cell)
        return round(centre_lat, 6), round(centre_lon, 6)
    return None, None
