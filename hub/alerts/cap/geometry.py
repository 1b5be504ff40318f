"""Plane geometry on CAP polygons: closure, self-crossing and the antimeridian.

CAP points are (latitude, longitude). A polygon that crosses the antimeridian has an edge whose
longitudes differ by more than 180 degrees; `unwrap` moves its western longitudes past +180 so
the ring is continuous, and every test here runs on the unwrapped ring.
"""

from __future__ import annotations

from hub.alerts.cap.model import Point


def crosses_antimeridian(ring: list[Point]) -> bool:
    return any(abs(b[1] - a[1]) > 180 for a, b in zip(ring, ring[1:], strict=False))


def unwrap(ring: list[Point]) -> list[Point]:
    """Return the ring with negative longitudes shifted by 360 when it crosses the
    antimeridian, so edges never jump across the map; other rings are returned unchanged."""
    if not crosses_antimeridian(ring):
        return list(ring)
    return [(lat, lon + 360 if lon < 0 else lon) for lat, lon in ring]


def _orientation(a: Point, b: Point, c: Point) -> int:
    cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    if cross > 0:
        return 1
    if cross < 0:
        return -1
    return 0


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def segments_intersect(a: Point, b: Point, c: Point, d: Point) -> bool:
    """True when segment a-b and segment c-d share at least one point."""
    o1, o2 = _orientation(a, b, c), _orientation(a, b, d)
    o3, o4 = _orientation(c, d, a), _orientation(c, d, b)
    if o1 != o2 and o3 != o4:
        return True
    if o1 == 0 and _on_segment(a, b, c):
        return True
    if o2 == 0 and _on_segment(a, b, d):
        return True
    if o3 == 0 and _on_segment(c, d, a):
        return True
    return o4 == 0 and _on_segment(c, d, b)


def _dedupe(ring: list[Point]) -> list[Point]:
    result: list[Point] = []
    for point in ring:
        if not result or result[-1] != point:
            result.append(point)
    return result


def self_crossing_edges(ring: list[Point]) -> tuple[int, int] | None:
    """Return the 1-based numbers of two non-adjacent edges that touch or cross, or None.

    `ring` is closed (first point equals last). Repeated consecutive points are ignored. The
    test compares every pair of edges whose bounding boxes overlap, so it is quadratic in the
    worst case; CAP polygons have at most a few thousand points.
    """
    points = _dedupe(unwrap(ring))
    edges = list(zip(points, points[1:], strict=False))
    count = len(edges)
    boxes = [(min(a[0], b[0]), max(a[0], b[0]), min(a[1], b[1]), max(a[1], b[1])) for a, b in edges]
    order = sorted(range(count), key=lambda k: boxes[k][0])
    for position, i in enumerate(order):
        for j in order[position + 1 :]:
            if boxes[j][0] > boxes[i][1]:
                break
            if boxes[j][3] < boxes[i][2] or boxes[j][2] > boxes[i][3]:
                continue
            low, high = min(i, j), max(i, j)
            adjacent = high - low == 1 or (low == 0 and high == count - 1)
            if adjacent:
                continue
            if segments_intersect(*edges[low], *edges[high]):
                return low + 1, high + 1
    return None


def contains(ring: list[Point], point: Point) -> bool:
    """Even-odd test of whether `point` lies inside the closed ring (unwrapped coordinates)."""
    ring = unwrap(ring)
    lat, lon = point
    if crosses_antimeridian(ring) or any(p[1] > 180 for p in ring):
        lon = lon + 360 if lon < 0 else lon
    inside = False
    for (lat1, lon1), (lat2, lon2) in zip(ring, ring[1:], strict=False):
        if (lat1 > lat) != (lat2 > lat):
            crossing_lon = lon1 + (lat - lat1) * (lon2 - lon1) / (lat2 - lat1)
            if lon < crossing_lon:
                inside = not inside
    return inside


def rings_overlap(first: list[Point], second: list[Point]) -> bool:
    """True when two closed rings share a point: one lies inside the other, or an edge of one
    touches an edge of the other."""
    if contains(second, first[0]) or contains(first, second[0]):
        return True
    edges = list(zip(second, second[1:], strict=False))
    for a, b in zip(first, first[1:], strict=False):
        low_lat, high_lat = min(a[0], b[0]), max(a[0], b[0])
        low_lon, high_lon = min(a[1], b[1]), max(a[1], b[1])
        for c, d in edges:
            if max(c[0], d[0]) < low_lat or min(c[0], d[0]) > high_lat:
                continue
            if max(c[1], d[1]) < low_lon or min(c[1], d[1]) > high_lon:
                continue
            if segments_intersect(a, b, c, d):
                return True
    return False
