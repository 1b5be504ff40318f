"""Coordinates: range checks, distances, H3 cells and the public location of a request."""

from __future__ import annotations

import math

import h3

from hub.core.errors import InvalidInput

EARTH_RADIUS_M = 6_371_008.8
# Resolution of the `h3_cell` column: cells of about 0.1 km², used for duplicate search.
STORAGE_H3_RESOLUTION = 9


def check_coordinates(lat: float, lon: float) -> None:
    """Raise InvalidInput unless `lat`/`lon` are finite WGS84 degrees within range."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise InvalidInput("lat and long must be finite numbers", code="invalid_location")
    if not -90.0 <= lat <= 90.0:
        raise InvalidInput(f"lat {lat} is outside [-90, 90]", code="invalid_location")
    if not -180.0 <= lon <= 180.0:
        raise InvalidInput(f"long {lon} is outside [-180, 180]", code="invalid_location")


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
