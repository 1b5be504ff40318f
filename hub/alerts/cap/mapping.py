"""CAP as JSON or YAML: the same element names as the XML (`msgType`, `areaDesc`, ...), with
repeated elements as lists and polygons and circles in CAP's text form.

Example (YAML):

    identifier: NYC-HU-1
    sender: oem@nyc.example.org
    status: Actual
    msgType: Alert
    scope: Public
    info:
      - language: en-US
        category: [Met]
        event: Hurricane
        urgency: Immediate
        severity: Extreme
        certainty: Likely
        expires: "2026-12-05T18:00:00-05:00"
        headline: Hurricane warning
        area:
          - areaDesc: Coastal zones
            polygon: ["40.5,-74.3 40.5,-73.7 40.9,-73.7 40.9,-74.3 40.5,-74.3"]

`sent` defaults to the current time when absent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.alerts.cap.model import Alert, Area, Circle, Info, NamedValue, Resource
from hub.alerts.cap.parser import parse_cap_datetime, parse_circle, parse_polygon
from hub.alerts.cap.problems import Problem
from hub.alerts.cap.writer import format_cap_datetime, format_coordinate


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class _Reader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def time(self, data: dict[str, Any], name: str, path: str) -> datetime | None:
        value = data.get(name)
        if value is None:
            return None
        if isinstance(value, datetime):
            return value
        parsed = parse_cap_datetime(str(value))
        if parsed is None:
            self.problems.append(
                Problem(
                    f"{path}/{name}", f"invalid date-time {value!r}; use 2026-12-04T10:00:00-05:00"
                )
            )
        return parsed

    def named(self, data: dict[str, Any], name: str) -> list[NamedValue]:
        return [
            NamedValue(_text(item.get("valueName")), _text(item.get("value")))
            for item in _list(data.get(name))
            if isinstance(item, dict)
        ]

    def decimal(self, data: dict[str, Any], name: str, path: str) -> Decimal | None:
        value = data.get(name)
        if value is None:
            return None
        try:
            return Decimal(str(value))
        except InvalidOperation:
            self.problems.append(Problem(f"{path}/{name}", f"invalid decimal {value!r}"))
            return None

    def area(self, data: dict[str, Any], path: str) -> Area:
        area = Area(area_desc=_text(data.get("areaDesc")))
        for number, text in enumerate(_list(data.get("polygon")), start=1):
            points = parse_polygon(str(text))
            if points is None:
                self.problems.append(
                    Problem(f"{path}/polygon[{number}]", "invalid polygon; expected lat,lon pairs")
                )
            else:
                area.polygons.append(points)
        for number, text in enumerate(_list(data.get("circle")), start=1):
            circle = parse_circle(str(text))
            if circle is None:
                self.problems.append(
                    Problem(f"{path}/circle[{number}]", "invalid circle; expected 'lat,lon km'")
                )
            else:
                area.circles.append(circle)
        area.geocodes = self.named(data, "geocode")
        area.altitude = self.decimal(data, "altitude", path)
        area.ceiling = self.decimal(data, "ceiling", path)
        return area

    def info(self, data: dict[str, Any], path: str) -> Info:
        info = Info(
            language=_text(data.get("language")),
            categories=[str(c) for c in _list(data.get("category"))],
            event=_text(data.get("event")),
            response_types=[str(r) for r in _list(data.get("responseType"))],
            urgency=_text(data.get("urgency")),
            severity=_text(data.get("severity")),
            certainty=_text(data.get("certainty")),
            audience=_text(data.get("audience")),
            event_codes=self.named(data, "eventCode"),
            effective=self.time(data, "effective", path),
            onset=self.time(data, "onset", path),
            expires=self.time(data, "expires", path),
            sender_name=_text(data.get("senderName")),
            headline=_text(data.get("headline")),
            description=_text(data.get("description")),
            instruction=_text(data.get("instruction")),
            web=_text(data.get("web")),
            contact=_text(data.get("contact")),
            parameters=self.named(data, "parameter"),
        )
        for item in _list(data.get("resource")):
            size = item.get("size")
            info.resources.append(
                Resource(
                    resource_desc=_text(item.get("resourceDesc")),
                    mime_type=_text(item.get("mimeType")),
                    size=int(size) if size is not None else None,
                    uri=_text(item.get("uri")),
                    deref_uri=_text(item.get("derefUri")),
                    digest=_text(item.get("digest")),
                )
            )
        for number, item in enumerate(_list(data.get("area")), start=1):
            info.areas.append(self.area(item, f"{path}/area[{number}]"))
        return info


def from_dict(data: dict[str, Any]) -> tuple[Alert, list[Problem]]:
    """Build the model from a JSON or YAML mapping; return it and the unreadable values."""
    reader = _Reader()
    sent = reader.time(data, "sent", "alert") or datetime.now(UTC).replace(microsecond=0)
    alert = Alert(
        identifier=_text(data.get("identifier")),
        sender=_text(data.get("sender")),
        sent=sent,
        status=_text(data.get("status")),
        msg_type=_text(data.get("msgType")),
        source=_text(data.get("source")),
        scope=_text(data.get("scope")),
        restriction=_text(data.get("restriction")),
        addresses=_text(data.get("addresses")),
        codes=[str(c) for c in _list(data.get("code"))],
        note=_text(data.get("note")),
        references=_text(data.get("references")),
        incidents=_text(data.get("incidents")),
    )
    for number, item in enumerate(_list(data.get("info")), start=1):
        if isinstance(item, dict):
            alert.infos.append(reader.info(item, f"alert/info[{number}]"))
    return alert, reader.problems


def _drop_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None and v != []}


def _circle_text(circle: Circle) -> str:
    centre = f"{format_coordinate(circle.lat)},{format_coordinate(circle.lon)}"
    return f"{centre} {format_coordinate(circle.radius_km)}"


def to_dict(alert: Alert) -> dict[str, Any]:
    """Return the JSON form of an alert (the inverse of `from_dict`)."""

    def when(value: datetime | None) -> str | None:
        return format_cap_datetime(value) if value else None

    def named(values: list[NamedValue]) -> list[dict[str, Any]]:
        return [{"valueName": v.value_name, "value": v.value} for v in values]

    infos = []
    for info in alert.infos:
        areas = [
            _drop_empty(
                {
                    "areaDesc": area.area_desc,
                    "polygon": [
                        " ".join(f"{format_coordinate(a)},{format_coordinate(b)}" for a, b in ring)
                        for ring in area.polygons
                    ],
                    "circle": [_circle_text(c) for c in area.circles],
                    "geocode": named(area.geocodes),
                    "altitude": str(area.altitude) if area.altitude is not None else None,
                    "ceiling": str(area.ceiling) if area.ceiling is not None else None,
                }
            )
            for area in info.areas
        ]
        resources = [
            _drop_empty(
                {
                    "resourceDesc": r.resource_desc,
                    "mimeType": r.mime_type,
                    "size": r.size,
                    "uri": r.uri,
                    "derefUri": r.deref_uri,
                    "digest": r.digest,
                }
            )
            for r in info.resources
        ]
        infos.append(
            _drop_empty(
                {
                    "language": info.language,
                    "category": info.categories,
                    "event": info.event,
                    "responseType": info.response_types,
                    "urgency": info.urgency,
                    "severity": info.severity,
                    "certainty": info.certainty,
                    "audience": info.audience,
                    "eventCode": named(info.event_codes),
                    "effective": when(info.effective),
                    "onset": when(info.onset),
                    "expires": when(info.expires),
                    "senderName": info.sender_name,
                    "headline": info.headline,
                    "description": info.description,
                    "instruction": info.instruction,
                    "web": info.web,
                    "contact": info.contact,
                    "parameter": named(info.parameters),
                    "resource": resources,
                    "area": areas,
                }
            )
        )
    return _drop_empty(
        {
            "identifier": alert.identifier,
            "sender": alert.sender,
            "sent": when(alert.sent),
            "status": alert.status,
            "msgType": alert.msg_type,
            "source": alert.source,
            "scope": alert.scope,
            "restriction": alert.restriction,
            "addresses": alert.addresses,
            "code": alert.codes,
            "note": alert.note,
            "references": alert.references,
            "incidents": alert.incidents,
            "info": infos,
        }
    )
