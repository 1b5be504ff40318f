"""Turn places and CAP areas into H3 cells at the resolutions the subscriber index uses.

An area is filled at the finest resolution that keeps the cell count bounded, compacted, and
then expressed at the three indexed resolutions, so targeting is one query with three `IN`
lists whatever the size of the area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import h3

from hub.alerts.cap import geometry
from hub.alerts.cap.model import Area, Circle, Point
from hub.alerts.models import COARSE_RESOLUTION, FINE_RESOLUTION, MEDIUM_RESOLUTION

# Upper bound on cells produced by one polygon fill; a larger area is filled at a coarser
# resolution instead. The estimate uses each resolution's average cell area.
MAX_FILL_CELLS = 400_000
_EARTH_RADIUS_KM = 6371.0088
_CIRCLE_VERTICES = 48


@dataclass
class CellSet:
    """Cells to match, one set per indexed resolution (H3 cells as 64-bit integers)."""

    fine: set[int] = field(default_factory=set)
    medium: set[int] = field(default_factory=set)
    coarse: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.fine) + len(self.medium) + len(self.coarse)

    def update(self, other: CellSet) -> None:
        self.fine |= other.fine
        self.medium |= other.medium
        self.coarse |= other.coarse


def place_cells(lat: float, lon: float) -> tuple[int, int, int]:
    """Return the fine, medium and coarse cells of a point, as stored for a subscriber."""
    fine = h3.latlng_to_cell(lat, lon, FINE_RESOLUTION)
    return (
        h3.str_to_int(fine),
        h3.str_to_int(h3.cell_to_parent(fine, MEDIUM_RESOLUTION)),
        h3.str_to_int(h3.cell_to_parent(fine, COARSE_RESOLUTION)),
    )


def _add_cell(cells: CellSet, cell: str) -> None:
    resolution = h3.get_resolution(cell)
    if resolution >= FINE_RESOLUTION:
        cells.fine.add(h3.str_to_int(h3.cell_to_parent(cell, FINE_RESOLUTION)))
    elif resolution > MEDIUM_RESOLUTION:
        cells.fine.update(h3.str_to_int(c) for c in h3.cell_to_children(cell, FINE_RESOLUTION))
    elif resolution == MEDIUM_RESOLUTION:
        cells.medium.add(h3.str_to_int(cell))
    elif resolution > COARSE_RESOLUTION:
        cells.medium.update(h3.str_to_int(c) for c in h3.cell_to_children(cell, MEDIUM_RESOLUTION))
    elif resolution == COARSE_RESOLUTION:
        cells.coarse.add(h3.str_to_int(cell))
    else:
        cells.coarse.update(h3.str_to_int(c) for c in h3.cell_to_children(cell, COARSE_RESOLUTION))


def _ring_area_km2(ring: list[Point]) -> float:
    """Approximate the area of a small ring on the sphere (equirectangular projection)."""
    mean_lat = math.radians(sum(p[0] for p in ring) / len(ring))
    scale = math.pi / 180 * _EARTH_RADIUS_KM
    xs = [p[1] * scale * math.cos(mean_lat) for p in ring]
    ys = [p[0] * scale for p in ring]
    twice = sum(xs[i] * ys[i + 1] - xs[i + 1] * ys[i] for i in range(len(ring) - 1))
    return abs(twice) / 2


def _fill_resolution(area_km2: float) -> int:
    for resolution in range(FINE_RESOLUTION, 0, -1):
        if area_km2 / h3.average_hexagon_area(resolution, unit="km^2") <= MAX_FILL_CELLS:
            return resolution
    return 0


def _split_at_antimeridian(ring: list[Point]) -> list[list[Point]]:
    """Clip an unwrapped ring (longitudes up to 540) at +180 into rings in [-180, 180]."""
    if not any(lon > 180 for _, lon in ring):
        return [ring]
    west = _clip(ring, keep_below=True)
    east = [(lat, lon - 360) for lat, lon in _clip(ring, keep_below=False)]
    return [part for part in (west, east) if len(part) >= 4]


def _clip(ring: list[Point], *, keep_below: bool) -> list[Point]:
    """Sutherland-Hodgman clip of a closed ring against the meridian lon = 180."""

    def inside(point: Point) -> bool:
        return point[1] <= 180 if keep_below else point[1] >= 180

    result: list[Point] = []
    for a, b in zip(ring, ring[1:], strict=False):
        if inside(a):
            result.append(a)
        if inside(a) != inside(b):
            t = (180 - a[1]) / (b[1] - a[1])
            result.append((a[0] + t * (b[0] - a[0]), 180.0))
    if result and result[0] != result[-1]:
        result.append(result[0])
    return result


def polygon_cells(ring: list[Point]) -> CellSet:
    """Fill a closed CAP polygon with cells; the cell under its first point is always
    included, so an area smaller than one cell still targets that cell."""
    cells = CellSet()
    unwrapped = geometry.unwrap(ring)
    resolution = _fill_resolution(_ring_area_km2(unwrapped))
    for part in _split_at_antimeridian(unwrapped):
        outer = [(lat, lon) for lat, lon in part[:-1]]
        filled = h3.polygon_to_cells(h3.LatLngPoly(outer), resolution)
        for cell in h3.compact_cells(filled):
            _add_cell(cells, cell)
    _add_cell(cells, h3.latlng_to_cell(ring[0][0], ring[0][1], FINE_RESOLUTION))
    return cells


def circle_ring(circle: Circle) -> list[Point]:
    """Approximate a circle by a closed polygon on the sphere."""
    lat1 = math.radians(circle.lat)
    lon1 = math.radians(circle.lon)
    angular = circle.radius_km / _EARTH_RADIUS_KM
    ring = []
    for step in range(_CIRCLE_VERTICES):
        bearing = 2 * math.pi * step / _CIRCLE_VERTICES
        lat2 = math.asin(
            math.sin(lat1) * math.cos(angular)
            + math.cos(lat1) * math.sin(angular) * math.cos(bearing)
        )
        lon2 = lon1 + math.atan2(
            math.sin(bearing) * math.sin(angular) * math.cos(lat1),
            math.cos(angular) - math.sin(lat1) * math.sin(lat2),
        )
        lon_degrees = (math.degrees(lon2) + 540) % 360 - 180
        ring.append((math.degrees(lat2), lon_degrees))
    ring.append(ring[0])
    return ring


def circle_cells(circle: Circle) -> CellSet:
    cells = CellSet()
    if circle.radius_km > 0:
        cells.update(polygon_cells(circle_ring(circle)))
    _add_cell(cells, h3.latlng_to_cell(circle.lat, circle.lon, FINE_RESOLUTION))
    return cells


def area_cells(area: Area, zones: dict[tuple[str, str], list[list[Point]]]) -> CellSet:
    """Cells of one CAP area: its polygons, circles and the tenant's geocode zones.

    `zones` maps (valueName, value) to the zone's rings; geocodes the tenant has not defined
    add nothing.
    """
    cells = CellSet()
    for ring in area.polygons:
        cells.update(polygon_cells(ring))
    for circle in area.circles:
        cells.update(circle_cells(circle))
    for code in area.geocodes:
        for ring in zones.get((code.value_name or "", code.value or ""), []):
            cells.update(polygon_cells(ring))
    return cells
