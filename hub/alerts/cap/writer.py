"""Write the model as CAP 1.2 XML in the schema's element order, in the default namespace."""

from __future__ import annotations

from datetime import datetime, timedelta

from lxml import etree

from hub.alerts.cap.model import CAP_NAMESPACE, Alert, Area, Info, NamedValue, Resource

_NS = "{%s}" % CAP_NAMESPACE  # noqa: UP031 - braces in the template make a format string unclear


def format_cap_datetime(value: datetime) -> str:
    """Format with seconds and a numeric offset; UTC is written `-00:00` as CAP 1.2 requires."""
    if value.tzinfo is None:
        raise ValueError("CAP times need a timezone offset")
    text = value.replace(microsecond=0).isoformat()
    if value.utcoffset() == timedelta(0):
        text = text[: -len("+00:00")] + "-00:00"
    return text


def format_coordinate(value: float) -> str:
    """Format a coordinate in plain decimal notation (no exponent), keeping every digit."""
    text = repr(value)
    if "e" in text or "E" in text:
        text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text


def _add(parent: etree._Element, name: str, value: object | None) -> None:
    if value is None:
        return
    child = etree.SubElement(parent, _NS + name)
    if isinstance(value, datetime):
        child.text = format_cap_datetime(value)
    else:
        child.text = str(value)


def _add_named(parent: etree._Element, name: str, values: list[NamedValue]) -> None:
    for pair in values:
        element = etree.SubElement(parent, _NS + name)
        _add(element, "valueName", pair.value_name or "")
        _add(element, "value", pair.value or "")


def _write_resource(parent: etree._Element, resource: Resource) -> None:
    element = etree.SubElement(parent, _NS + "resource")
    _add(element, "resourceDesc", resource.resource_desc)
    _add(element, "mimeType", resource.mime_type)
    _add(element, "size", resource.size)
    _add(element, "uri", resource.uri)
    _add(element, "derefUri", resource.deref_uri)
    _add(element, "digest", resource.digest)


def _write_area(parent: etree._Element, area: Area) -> None:
    element = etree.SubElement(parent, _NS + "area")
    _add(element, "areaDesc", area.area_desc)
    for ring in area.polygons:
        text = " ".join(f"{format_coordinate(lat)},{format_coordinate(lon)}" for lat, lon in ring)
        _add(element, "polygon", text)
    for circle in area.circles:
        centre = f"{format_coordinate(circle.lat)},{format_coordinate(circle.lon)}"
        _add(element, "circle", f"{centre} {format_coordinate(circle.radius_km)}")
    _add_named(element, "geocode", area.geocodes)
    _add(element, "altitude", area.altitude)
    _add(element, "ceiling", area.ceiling)


def _write_info(parent: etree._Element, info: Info) -> None:
    element = etree.SubElement(parent, _NS + "info")
    _add(element, "language", info.language)
    for category in info.categories:
        _add(element, "category", category)
    _add(element, "event", info.event)
    for response in info.response_types:
        _add(element, "responseType", response)
    _add(element, "urgency", info.urgency)
    _add(element, "severity", info.severity)
    _add(element, "certainty", info.certainty)
    _add(element, "audience", info.audience)
    _add_named(element, "eventCode", info.event_codes)
    _add(element, "effective", info.effective)
    _add(element, "onset", info.onset)
    _add(element, "expires", info.expires)
    _add(element, "senderName", info.sender_name)
    _add(element, "headline", info.headline)
    _add(element, "description", info.description)
    _add(element, "instruction", info.instruction)
    _add(element, "web", info.web)
    _add(element, "contact", info.contact)
    _add_named(element, "parameter", info.parameters)
    for resource in info.resources:
        _write_resource(element, resource)
    for area in info.areas:
        _write_area(element, area)


def to_element(alert: Alert) -> etree._Element:
    root = etree.Element(_NS + "alert", nsmap={None: CAP_NAMESPACE})
    _add(root, "identifier", alert.identifier)
    _add(root, "sender", alert.sender)
    _add(root, "sent", alert.sent)
    _add(root, "status", alert.status)
    _add(root, "msgType", alert.msg_type)
    _add(root, "source", alert.source)
    _add(root, "scope", alert.scope)
    _add(root, "restriction", alert.restriction)
    _add(root, "addresses", alert.addresses)
    for code in alert.codes:
        _add(root, "code", code)
    _add(root, "note", alert.note)
    _add(root, "references", alert.references)
    _add(root, "incidents", alert.incidents)
    for info in alert.infos:
        _write_info(root, info)
    return root


def write(alert: Alert) -> bytes:
    """Serialize `alert` as a UTF-8 CAP 1.2 document with an XML declaration."""
    return etree.tostring(
        to_element(alert), xml_declaration=True, encoding="UTF-8", pretty_print=True
    )
