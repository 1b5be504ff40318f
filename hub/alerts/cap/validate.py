"""Check a CAP model against the CAP 1.2 schema's content rules and the hub's rules beyond it.

Schema rules: required elements, enumerations, identifier characters, date-time form. Rules
beyond the schema: a polygon is closed, has at least 4 points, stays within the coordinate
ranges and does not cross itself (tested on the unwrapped ring when it crosses the
antimeridian). A circle radius is not negative, and positive in alerts the hub sends.
`references` is present and well formed for Update and Cancel. An Alert has at least one
`info`, while a Cancel may have none.

Every problem is collected; nothing stops at the first one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hub.alerts.cap import geometry
from hub.alerts.cap.model import (
    CATEGORIES,
    CERTAINTIES,
    MSG_TYPES,
    RESPONSE_TYPES,
    SCOPES,
    SEVERITIES,
    STATUSES,
    URGENCIES,
    Alert,
    Area,
    Info,
    NamedValue,
)
from hub.alerts.cap.parser import parse, parse_cap_datetime
from hub.alerts.cap.problems import Problem

# CAP 1.2: identifier and sender must not include spaces, commas, `<` or `&`.
_RESTRICTED = re.compile(r"[\s,<&]")
# xs:language: letters, then hyphen-separated groups of letters and digits.
_LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")


class _Collector:
    def __init__(self, skip: Iterable[str] = ()):
        self.problems: list[Problem] = []
        self.skip = set(skip)

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def required(self, path: str, name: str, value: object) -> bool:
        full = f"{path}/{name}"
        if value is None:
            if full not in self.skip:
                self.add(full, f"required element <{name}> is missing")
            return False
        if isinstance(value, str) and not value.strip():
            self.add(full, f"required element <{name}> is empty")
            return False
        return True

    def choice(self, path: str, name: str, value: str | None, allowed: tuple[str, ...]) -> None:
        if self.required(path, name, value) and value not in allowed:
            self.add(f"{path}/{name}", f"invalid value {value!r}; allowed: {', '.join(allowed)}")


def _check_named(collector: _Collector, path: str, name: str, values: list[NamedValue]) -> None:
    for number, pair in enumerate(values, start=1):
        item = f"{path}/{name}[{number}]"
        collector.required(item, "valueName", pair.value_name)
        if pair.value is None:
            collector.add(f"{item}/value", "required element <value> is missing")


def _check_polygon(collector: _Collector, path: str, ring: list[tuple[float, float]]) -> None:
    if len(ring) < 4:
        collector.add(path, f"polygon has {len(ring)} points; at least 4 are required")
        return
    for lat, lon in ring:
        if not (-90 <= lat <= 90) or not (-180 <= lon <= 180):
            collector.add(
                path,
                f"point {lat},{lon} is out of range; latitude must be within [-90, 90] "
                "and longitude within [-180, 180]",
            )
            return
    if ring[0] != ring[-1]:
        collector.add(path, "polygon is not closed: the first and last points must be equal")
        return
    crossing = geometry.self_crossing_edges(ring)
    if crossing is not None:
        first, second = crossing
        collector.add(path, f"polygon crosses itself: edges {first} and {second} intersect")


def _check_area(collector: _Collector, path: str, area: Area, sending: bool) -> None:
    collector.required(path, "areaDesc", area.area_desc)
    for number, ring in enumerate(area.polygons, start=1):
        _check_polygon(collector, f"{path}/polygon[{number}]", ring)
    for number, circle in enumerate(area.circles, start=1):
        item = f"{path}/circle[{number}]"
        if not (-90 <= circle.lat <= 90) or not (-180 <= circle.lon <= 180):
            collector.add(item, f"centre {circle.lat},{circle.lon} is out of range")
        # The OASIS CAP 1.2 examples use radius 0 for a point, so received messages may too.
        # An alert the hub sends targets residents by area and needs a positive radius.
        if circle.radius_km < 0 or (sending and circle.radius_km == 0):
            collector.add(item, f"radius {circle.radius_km} km is not positive")
    _check_named(collector, path, "geocode", area.geocodes)
    if area.ceiling is not None and area.altitude is None:
        collector.add(f"{path}/ceiling", "<ceiling> requires <altitude>")


def _check_info(collector: _Collector, path: str, info: Info, sending: bool) -> None:
    if info.language is not None and not _LANGUAGE.match(info.language):
        collector.add(f"{path}/language", f"invalid language code {info.language!r}")
    if not info.categories:
        collector.add(f"{path}/category", "required element <category> is missing")
    for category in info.categories:
        if category not in CATEGORIES:
            collector.add(
                f"{path}/category",
                f"invalid value {category!r}; allowed: {', '.join(CATEGORIES)}",
            )
    collector.required(path, "event", info.event)
    for response in info.response_types:
        if response not in RESPONSE_TYPES:
            collector.add(
                f"{path}/responseType",
                f"invalid value {response!r}; allowed: {', '.join(RESPONSE_TYPES)}",
            )
    collector.choice(path, "urgency", info.urgency, URGENCIES)
    collector.choice(path, "severity", info.severity, SEVERITIES)
    collector.choice(path, "certainty", info.certainty, CERTAINTIES)
    _check_named(collector, path, "eventCode", info.event_codes)
    _check_named(collector, path, "parameter", info.parameters)
    for name in ("effective", "onset", "expires"):
        value = getattr(info, name)
        if value is not None and value.tzinfo is None:
            collector.add(f"{path}/{name}", "date-time has no offset")
    if info.expires and info.effective and info.expires <= info.effective:
        collector.add(f"{path}/expires", "<expires> must be later than <effective>")
    for number, resource in enumerate(info.resources, start=1):
        item = f"{path}/resource[{number}]"
        collector.required(item, "resourceDesc", resource.resource_desc)
        collector.required(item, "mimeType", resource.mime_type)
        if resource.size is not None and resource.size < 0:
            collector.add(f"{item}/size", "size must not be negative")
    for number, area in enumerate(info.areas, start=1):
        _check_area(collector, f"{path}/area[{number}]", area, sending)


def _check_references(collector: _Collector, alert: Alert) -> None:
    if alert.msg_type in ("Update", "Cancel", "Ack", "Error") and not alert.references:
        if alert.msg_type in ("Update", "Cancel"):
            collector.add(
                "alert/references",
                f"<references> is required for msgType {alert.msg_type}; list the earlier "
                "message as sender,identifier,sent",
            )
        return
    if not alert.references:
        return
    for token in alert.references.split():
        parts = token.split(",")
        if len(parts) != 3 or not all(parts):
            collector.add(
                "alert/references",
                f"invalid reference {token!r}; expected sender,identifier,sent",
            )
        elif parse_cap_datetime(parts[2]) is None:
            collector.add(
                "alert/references", f"invalid sent time {parts[2]!r} in reference {token!r}"
            )


def validate(alert: Alert, *, skip: Iterable[str] = (), sending: bool = False) -> list[Problem]:
    """Return every problem in `alert`. `skip` lists paths already reported as unreadable;
    `sending` adds the stricter rules for alerts the hub itself sends to residents."""
    collector = _Collector(skip)
    for name in ("identifier", "sender"):
        value = getattr(alert, name)
        if collector.required("alert", name, value) and _RESTRICTED.search(value):
            collector.add(f"alert/{name}", f"<{name}> must not contain spaces, commas, '<' or '&'")
    if collector.required("alert", "sent", alert.sent) and alert.sent.tzinfo is None:
        collector.add("alert/sent", "<sent> needs a timezone offset such as -05:00")
    collector.choice("alert", "status", alert.status, STATUSES)
    collector.choice("alert", "msgType", alert.msg_type, MSG_TYPES)
    collector.choice("alert", "scope", alert.scope, SCOPES)
    if alert.scope == "Restricted" and not alert.restriction:
        collector.add("alert/restriction", "<restriction> is required when scope is Restricted")
    if alert.scope == "Private" and not alert.addresses:
        collector.add("alert/addresses", "<addresses> is required when scope is Private")
    _check_references(collector, alert)
    if alert.msg_type == "Alert" and not alert.infos:
        collector.add("alert/info", "an Alert needs at least one <info> block")
    for number, info in enumerate(alert.infos, start=1):
        _check_info(collector, f"alert/info[{number}]", info, sending)
    return collector.problems


def check_document(
    data: bytes | str, *, sending: bool = False
) -> tuple[Alert | None, list[Problem]]:
    """Parse and validate a CAP document; return the model and every problem in it."""
    result = parse(data)
    if result.alert is None:
        return None, result.problems
    problems = validate(result.alert, skip=result.unreadable, sending=sending)
    return result.alert, result.problems + problems
