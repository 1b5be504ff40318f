"""Check that an alert's areas reach the tenants it goes to, before the alert is stored.

An area outside every participating tenant's service area reaches nobody. The usual cause is
a polygon or circle written longitude first, as GeoJSON orders points, so the message says
when swapping the two numbers would put the area inside.
"""

from __future__ import annotations

from hub.alerts.cap.geometry import rings_overlap
from hub.alerts.cap.model import Alert, Area, Circle, Point
from hub.alerts.cap.problems import Problem
from hub.alerts.cells import circle_ring
from hub.alerts.policy import TenantAlertSettings


def area_rings(area: Area, settings: TenantAlertSettings) -> list[list[Point]]:
    """Return the closed rings an area covers for this tenant: its polygons, its circles and
    the tenant's geocode zones it names. A circle without radius is its centre point."""
    rings = list(area.polygons)
    for circle in area.circles:
        if circle.radius_km > 0:
            rings.append(circle_ring(circle))
        else:
            rings.append([(circle.lat, circle.lon)] * 4)
    for code in area.geocodes:
        rings += settings.zones.get((code.value_name or "", code.value or ""), [])
    return rings


def overlaps(area: Area, settings: TenantAlertSettings) -> bool:
    """Return whether the area shares a point with the tenant's service area. A tenant row
    whose stored manifest has no service area counts as overlapped, so it is never blamed."""
    if not settings.service_area:
        return True
    return any(
        rings_overlap(ring, outline)
        for ring in area_rings(area, settings)
        for outline in settings.service_area
    )


def _swapped(area: Area) -> Area | None:
    """Return the area with latitude and longitude swapped in every point, or None when a
    swapped latitude would be impossible."""
    points = [p for ring in area.polygons for p in ring] + [(c.lat, c.lon) for c in area.circles]
    if not points or any(abs(lon) > 90 for _lat, lon in points):
        return None
    return Area(
        area_desc=area.area_desc,
        polygons=[[(lon, lat) for lat, lon in ring] for ring in area.polygons],
        circles=[Circle(lat=c.lon, lon=c.lat, radius_km=c.radius_km) for c in area.circles],
    )


def _miss_message(area: Area, tenants: list[TenantAlertSettings]) -> str:
    names = " or ".join(t.tenant_id for t in tenants)
    name = f"area {area.area_desc!r}" if area.area_desc else "the area"
    message = (
        f"{name} does not overlap the service area of {names}, so no resident would get the alert"
    )
    swapped = _swapped(area)
    inside = [t.tenant_id for t in tenants if swapped is not None and overlaps(swapped, t)]
    if inside:
        message += (
            f"; with latitude and longitude swapped it would lie in {' and '.join(inside)}: "
            "CAP writes each point as latitude,longitude"
        )
    unknown = [
        f"{code.value_name}={code.value}"
        for code in area.geocodes
        if not any((code.value_name or "", code.value or "") in t.zones for t in tenants)
    ]
    if unknown:
        message += (
            f"; geocode {', '.join(unknown)} is not among the alerts.geocode_zones of {names}"
        )
    return message


def _area_key(area: Area) -> str:
    geocodes = [(code.value_name, code.value) for code in area.geocodes]
    return repr((area.polygons, area.circles, geocodes))


def area_problems(cap: Alert, tenants: list[TenantAlertSettings]) -> list[Problem]:
    """Report each area of the alert that overlaps none of the participating tenants.

    Info blocks in several languages usually repeat one area, so each distinct area is
    reported once, at its first path. An area given only as `areaDesc` has no place to
    compare. A Cancel reaches the residents the alert it cancels
    reached, whatever its areas, so it is not checked.
    """
    if cap.msg_type == "Cancel":
        return []
    problems = []
    seen: set[str] = set()
    for number, info in enumerate(cap.infos, start=1):
        for area_number, area in enumerate(info.areas, start=1):
            key = _area_key(area)
            if key in seen or not (area.polygons or area.circles or area.geocodes):
                continue
            seen.add(key)
            if not any(overlaps(area, tenant) for tenant in tenants):
                path = f"alert/info[{number}]/area[{area_number}]"
                problems.append(Problem(path, _miss_message(area, tenants)))
    return problems


def missed_tenant(cap: Alert, settings: TenantAlertSettings) -> str | None:
    """Return a warning when no area of the alert overlaps this tenant's service area (a
    tenant of a regional alert that the areas miss), or None."""
    areas = [area for info in cap.infos for area in info.areas]
    if cap.msg_type == "Cancel" or not areas:
        return None
    if any(overlaps(area, settings) for area in areas):
        return None
    return (
        f"no area of the alert overlaps the service area of {settings.tenant_id}, so none of "
        f"its residents would get it; add an area over {settings.tenant_id} or leave it out "
        "of the alert"
    )
