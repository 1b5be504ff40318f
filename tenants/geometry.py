"""GeoJSON polygons of service areas and districts, validated and tested for containment."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator


def _check_ring(ring: list[list[float]], where: str) -> None:
    if len(ring) < 4:
        raise ValueError(f"{where}: a linear ring needs at least 4 positions, got {len(ring)}")
    for index, position in enumerate(ring):
        if len(position) < 2:
            raise ValueError(f"{where}[{index}]: a position is [longitude, latitude]")
        lon, lat = position[0], position[1]
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise ValueError(f"{where}[{index}]: coordinates must be finite numbers")
        if not -180 <= lon <= 180:
            raise ValueError(f"{where}[{index}]: longitude {lon} is outside [-180, 180]")
        if not -90 <= lat <= 90:
            raise ValueError(
                f"{where}[{index}]: latitude {lat} is outside [-90, 90]; "
                "GeoJSON positions are [longitude, latitude]"
            )
    if list(ring[0][:2]) != list(ring[-1][:2]):
        raise ValueError(f"{where}: ring is not closed; repeat the first position at the end")
    crossing = _first_self_crossing(ring)
    if crossing is not None:
        first, second = crossing
        raise ValueError(
            f"{where}: ring crosses itself (edge {first} crosses edge {second}); "
            "reorder the positions so the outline does not cross"
        )


def _orientation(a: list[float], b: list[float], c: list[float]) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _segments_cross(a: list[float], b: list[float], c: list[float], d: list[float]) -> bool:
    """Return True when segments ab and cd cross at a point inside both (touching excluded)."""
    d1, d2 = _orientation(c, d, a), _orientation(c, d, b)
    d3, d4 = _orientation(a, b, c), _orientation(a, b, d)
    return d1 * d2 < 0 and d3 * d4 < 0


def _first_self_crossing(ring: list[list[float]]) -> tuple[int, int] | None:
    """Return the indexes of the first two non-adjacent edges that cross, or None.

    Quadratic in the number of edges, which is fine for outlines of a few hundred vertices.
    """
    edges = len(ring) - 1
    for i in range(edges):
        for j in range(i + 2, edges):
            if i == 0 and j == edges - 1:
                continue  # the first and last edges share the closing position
            if _segments_cross(ring[i], ring[i + 1], ring[j], ring[j + 1]):
                return i, j
    return None


class Geometry(BaseModel):
    """A GeoJSON Polygon or MultiPolygon in WGS 84 longitude/latitude (RFC 7946)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any]

    @model_validator(mode="after")
    def _check_rings(self) -> Geometry:
        polygons = [self.coordinates] if self.type == "Polygon" else self.coordinates
        if not polygons:
            raise ValueError("coordinates: a MultiPolygon needs at least one polygon")
        for p_index, polygon in enumerate(polygons):
            prefix = "coordinates" if self.type == "Polygon" else f"coordinates[{p_index}]"
            if not isinstance(polygon, list) or not polygon:
                raise ValueError(f"{prefix}: a polygon is a non-empty list of rings")
            for r_index, ring in enumerate(polygon):
                if not isinstance(ring, list) or not all(
                    isinstance(pos, list) and all(isinstance(c, int | float) for c in pos)
                    for pos in ring
                ):
                    raise ValueError(f"{prefix}[{r_index}]: a ring is a list of [lon, lat] pairs")
                _check_ring(ring, f"{prefix}[{r_index}]")
        return self

    def polygons(self) -> list[list[list[list[float]]]]:
        """Return the rings of each polygon: outer ring first, then holes."""
        return [self.coordinates] if self.type == "Polygon" else list(self.coordinates)

    def contains(self, lon: float, lat: float) -> bool:
        """Return True when the point lies inside (holes excluded), by ray casting."""
        for polygon in self.polygons():
            if _in_ring(lon, lat, polygon[0]) and not any(
                _in_ring(lon, lat, hole) for hole in polygon[1:]
            ):
                return True
        return False

    def bounds(self) -> tuple[float, float, float, float]:
        """Return (min_lon, min_lat, max_lon, max_lat) of the outer rings."""
        points = [pos for polygon in self.polygons() for pos in polygon[0]]
        lons = [p[0] for p in points]
        lats = [p[1] for p in points]
        return min(lons), min(lats), max(lons), max(lats)


def _in_ring(lon: float, lat: float, ring: list[list[float]]) -> bool:
    inside = False
    previous = ring[-1]
    for current in ring:
        x1, y1 = previous[0], previous[1]
        x2, y2 = current[0], current[1]
        if (y1 > lat) != (y2 > lat):
            crossing = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < crossing:
                inside = not inside
        previous = current
    return inside
