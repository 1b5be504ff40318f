"""Parse CAP 1.2 XML into the model, collecting every structural problem on the way.

The XML parser never loads a DTD, never resolves entities and never opens the network; a
document that declares a DOCTYPE is rejected outright, which stops entity-expansion payloads
("billion laughs") and external entities. Input larger than `MAX_CAP_BYTES` is rejected before
parsing.

The structural check here covers what the CAP 1.2 schema says about element names, order and
repetition. Required elements, enumerations and the rules beyond the schema are checked on the
model by `hub.alerts.cap.validate`, so messages composed from JSON or YAML get the same checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from lxml import etree

from hub.alerts.cap.model import (
    CAP_NAMESPACE,
    XMLDSIG_NAMESPACE,
    Alert,
    Area,
    Circle,
    Info,
    NamedValue,
    Point,
    Resource,
)
from hub.alerts.cap.problems import Problem

# Large enough for real messages with an embedded base64 resource (about 100 KB seen from
# IPAWS), small enough that one upload cannot exhaust a worker's memory.
MAX_CAP_BYTES = 2 * 1024 * 1024

UNBOUNDED = 10**9

# (element name, minimum, maximum) in schema order. Minimums are enforced by the validator.
_ALERT = [
    ("identifier", 1, 1),
    ("sender", 1, 1),
    ("sent", 1, 1),
    ("status", 1, 1),
    ("msgType", 1, 1),
    ("source", 0, 1),
    ("scope", 1, 1),
    ("restriction", 0, 1),
    ("addresses", 0, 1),
    ("code", 0, UNBOUNDED),
    ("note", 0, 1),
    ("references", 0, 1),
    ("incidents", 0, 1),
    ("info", 0, UNBOUNDED),
]
_INFO = [
    ("language", 0, 1),
    ("category", 1, UNBOUNDED),
    ("event", 1, 1),
    ("responseType", 0, UNBOUNDED),
    ("urgency", 1, 1),
    ("severity", 1, 1),
    ("certainty", 1, 1),
    ("audience", 0, 1),
    ("eventCode", 0, UNBOUNDED),
    ("effective", 0, 1),
    ("onset", 0, 1),
    ("expires", 0, 1),
    ("senderName", 0, 1),
    ("headline", 0, 1),
    ("description", 0, 1),
    ("instruction", 0, 1),
    ("web", 0, 1),
    ("contact", 0, 1),
    ("parameter", 0, UNBOUNDED),
    ("resource", 0, UNBOUNDED),
    ("area", 0, UNBOUNDED),
]
_RESOURCE = [
    ("resourceDesc", 1, 1),
    ("mimeType", 1, 1),
    ("size", 0, 1),
    ("uri", 0, 1),
    ("derefUri", 0, 1),
    ("digest", 0, 1),
]
_AREA = [
    ("areaDesc", 1, 1),
    ("polygon", 0, UNBOUNDED),
    ("circle", 0, UNBOUNDED),
    ("geocode", 0, UNBOUNDED),
    ("altitude", 0, 1),
    ("ceiling", 0, 1),
]
_NAMED_VALUE = [("valueName", 1, 1), ("value", 1, 1)]

# CAP 1.2 dateTime: seconds required, an explicit numeric offset, no `Z`.
DATETIME_PATTERN = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[-+]\d\d:\d\d$")


@dataclass
class ParseResult:
    alert: Alert | None
    problems: list[Problem] = field(default_factory=list)
    # Paths whose value was present but unreadable, so the validator does not also call them
    # missing.
    unreadable: set[str] = field(default_factory=set)


def _local(element: etree._Element) -> tuple[str | None, str]:
    qname = etree.QName(element)
    return qname.namespace, qname.localname


def _check_sequence(
    element: etree._Element,
    spec: list[tuple[str, int, int]],
    path: str,
    problems: list[Problem],
    allow_signature: bool = False,
) -> dict[str, list[etree._Element]]:
    """Group the children of `element` by name, reporting unknown, misplaced and repeated
    elements."""
    names = [name for name, _, _ in spec]
    maximum = {name: high for name, _, high in spec}
    grouped: dict[str, list[etree._Element]] = {name: [] for name in names}
    position = 0
    last_name: str | None = None
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments and processing instructions
        namespace, name = _local(child)
        if allow_signature and namespace == XMLDSIG_NAMESPACE:
            continue  # an enveloped XML signature; the hub does not verify it
        if namespace != CAP_NAMESPACE or name not in grouped:
            problems.append(
                Problem(f"{path}/{name}", f"unexpected element {child.tag!r} in <{_tail(path)}>")
            )
            continue
        index = names.index(name)
        if index < position:
            problems.append(
                Problem(
                    f"{path}/{name}",
                    f"element <{name}> is out of order: it must come before <{last_name}>",
                )
            )
        else:
            position = index
            last_name = name
        grouped[name].append(child)
        if len(grouped[name]) == maximum[name] + 1:
            problems.append(Problem(f"{path}/{name}", f"element <{name}> may appear at most once"))
    return grouped


def _tail(path: str) -> str:
    return re.sub(r"\[\d+\]$", "", path.rsplit("/", 1)[-1])


class _Reader:
    """Turns grouped child elements into typed values, recording unreadable ones."""

    def __init__(self, result: ParseResult):
        self.result = result

    def problem(self, path: str, message: str) -> None:
        self.result.problems.append(Problem(path, message))
        self.result.unreadable.add(path)

    def text(self, grouped: dict[str, list[etree._Element]], name: str) -> str | None:
        elements = grouped.get(name) or []
        if not elements:
            return None
        return elements[0].text or ""

    def token(self, grouped: dict[str, list[etree._Element]], name: str) -> str | None:
        value = self.text(grouped, name)
        return None if value is None else value.strip()

    def tokens(self, grouped: dict[str, list[etree._Element]], name: str) -> list[str]:
        return [(element.text or "").strip() for element in grouped.get(name) or []]

    def datetime(
        self, grouped: dict[str, list[etree._Element]], name: str, path: str
    ) -> datetime | None:
        value = self.token(grouped, name)
        if value is None:
            return None
        parsed = parse_cap_datetime(value)
        if parsed is None:
            self.problem(
                f"{path}/{name}",
                f"invalid date-time {value!r}; use YYYY-MM-DDThh:mm:ss with an offset such as "
                "-05:00 (CAP does not allow Z)",
            )
        return parsed

    def converted(
        self,
        grouped: dict[str, list[etree._Element]],
        name: str,
        path: str,
        convert: Callable[[str], object],
        expected: str,
    ) -> object | None:
        value = self.token(grouped, name)
        if value is None:
            return None
        try:
            return convert(value)
        except (ValueError, InvalidOperation):
            self.problem(f"{path}/{name}", f"invalid value {value!r}; expected {expected}")
            return None

    def named_values(
        self, grouped: dict[str, list[etree._Element]], name: str, path: str
    ) -> list[NamedValue]:
        values = []
        for number, element in enumerate(grouped.get(name) or [], start=1):
            inner = _check_sequence(
                element, _NAMED_VALUE, f"{path}/{name}[{number}]", self.result.problems
            )
            values.append(NamedValue(self.token(inner, "valueName"), self.text(inner, "value")))
        return values


def parse_cap_datetime(value: str) -> datetime | None:
    """Parse a CAP date-time; None when it lacks seconds or an offset or is not a date."""
    if not DATETIME_PATTERN.match(value):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_polygon(text: str) -> list[Point] | None:
    """Parse `lat,lon lat,lon ...`; None when any pair is malformed."""
    points = []
    for pair in text.split():
        parts = pair.split(",")
        if len(parts) != 2:
            return None
        try:
            points.append((float(parts[0]), float(parts[1])))
        except ValueError:
            return None
    return points


def parse_circle(text: str) -> Circle | None:
    """Parse `lat,lon radius`; None when malformed."""
    parts = text.split()
    if len(parts) != 2:
        return None
    centre = parse_polygon(parts[0])
    if not centre or len(centre) != 1:
        return None
    try:
        radius = float(parts[1])
    except ValueError:
        return None
    return Circle(centre[0][0], centre[0][1], radius)


def _read_area(reader: _Reader, element: etree._Element, path: str) -> Area:
    grouped = _check_sequence(element, _AREA, path, reader.result.problems)
    area = Area(area_desc=reader.text(grouped, "areaDesc"))
    for number, text in enumerate(reader.tokens(grouped, "polygon"), start=1):
        points = parse_polygon(text)
        if points is None:
            reader.problem(
                f"{path}/polygon[{number}]",
                "invalid polygon; expected space-separated latitude,longitude pairs",
            )
            continue
        area.polygons.append(points)
    for number, text in enumerate(reader.tokens(grouped, "circle"), start=1):
        circle = parse_circle(text)
        if circle is None:
            reader.problem(
                f"{path}/circle[{number}]",
                f"invalid circle {text!r}; expected 'latitude,longitude radius_km'",
            )
            continue
        area.circles.append(circle)
    area.geocodes = reader.named_values(grouped, "geocode", path)
    area.altitude = reader.converted(grouped, "altitude", path, Decimal, "a decimal in feet")
    area.ceiling = reader.converted(grouped, "ceiling", path, Decimal, "a decimal in feet")
    return area


def _read_resource(reader: _Reader, element: etree._Element, path: str) -> Resource:
    grouped = _check_sequence(element, _RESOURCE, path, reader.result.problems)
    return Resource(
        resource_desc=reader.text(grouped, "resourceDesc"),
        mime_type=reader.token(grouped, "mimeType"),
        size=reader.converted(grouped, "size", path, int, "an integer number of bytes"),
        uri=reader.token(grouped, "uri"),
        deref_uri=reader.token(grouped, "derefUri"),
        digest=reader.token(grouped, "digest"),
    )


def _read_info(reader: _Reader, element: etree._Element, path: str) -> Info:
    grouped = _check_sequence(element, _INFO, path, reader.result.problems)
    info = Info(
        language=reader.token(grouped, "language"),
        categories=reader.tokens(grouped, "category"),
        event=reader.text(grouped, "event"),
        response_types=reader.tokens(grouped, "responseType"),
        urgency=reader.token(grouped, "urgency"),
        severity=reader.token(grouped, "severity"),
        certainty=reader.token(grouped, "certainty"),
        audience=reader.text(grouped, "audience"),
        event_codes=reader.named_values(grouped, "eventCode", path),
        effective=reader.datetime(grouped, "effective", path),
        onset=reader.datetime(grouped, "onset", path),
        expires=reader.datetime(grouped, "expires", path),
        sender_name=reader.text(grouped, "senderName"),
        headline=reader.text(grouped, "headline"),
        description=reader.text(grouped, "description"),
        instruction=reader.text(grouped, "instruction"),
        web=reader.token(grouped, "web"),
        contact=reader.text(grouped, "contact"),
        parameters=reader.named_values(grouped, "parameter", path),
    )
    for number, child in enumerate(grouped["resource"], start=1):
        info.resources.append(_read_resource(reader, child, f"{path}/resource[{number}]"))
    for number, child in enumerate(grouped["area"], start=1):
        info.areas.append(_read_area(reader, child, f"{path}/area[{number}]"))
    return info


def _xml_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=False,
    )


def parse(data: bytes | str) -> ParseResult:
    """Parse a CAP 1.2 document. The result contains the model (None when the document cannot be
    read as CAP 1.2 at all) and every problem found in its structure."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    result = ParseResult(alert=None)
    if len(data) > MAX_CAP_BYTES:
        result.problems.append(
            Problem(
                "alert",
                f"document is {len(data)} bytes, over the limit of {MAX_CAP_BYTES} bytes",
            )
        )
        return result

    try:
        root = etree.fromstring(data, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        result.problems.append(Problem("alert", f"not well-formed XML: {exc}"))
        return result
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        result.problems.append(
            Problem("alert", "DOCTYPE declarations are not allowed in CAP messages")
        )
        return result

    namespace, name = _local(root)
    if name != "alert" or namespace != CAP_NAMESPACE:
        result.problems.append(
            Problem(
                "alert",
                f"root element is {root.tag!r}; expected <alert> in namespace {CAP_NAMESPACE}",
            )
        )
        return result

    reader = _Reader(result)
    grouped = _check_sequence(root, _ALERT, "alert", result.problems, allow_signature=True)
    alert = Alert(
        identifier=reader.token(grouped, "identifier"),
        sender=reader.token(grouped, "sender"),
        sent=reader.datetime(grouped, "sent", "alert"),
        status=reader.token(grouped, "status"),
        msg_type=reader.token(grouped, "msgType"),
        source=reader.text(grouped, "source"),
        scope=reader.token(grouped, "scope"),
        restriction=reader.text(grouped, "restriction"),
        addresses=reader.text(grouped, "addresses"),
        codes=reader.tokens(grouped, "code"),
        note=reader.text(grouped, "note"),
        references=reader.token(grouped, "references"),
        incidents=reader.token(grouped, "incidents"),
    )
    for number, child in enumerate(grouped["info"], start=1):
        alert.infos.append(_read_info(reader, child, f"alert/info[{number}]"))
    result.alert = alert
    return result
