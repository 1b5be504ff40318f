"""JSON and XML representations of GeoReport v2 documents, and the spec's error format.

Both formats are built from the same plain data, a list of dicts for a collection. In XML, a
list value inside a dict becomes a wrapper element with one child per item, so `attributes`
contains `attribute` elements as in the spec's XML examples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

from fastapi import Request, Response

JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
FORMATS = ("json", "xml")

# Child element names of the list-valued fields in the spec's XML.
_ITEM_TAGS = {
    "attributes": "attribute",
    "values": "value",
    "notes": "note",
    "endpoints": "endpoint",
    "formats": "format",
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "service_request_updates": "request_update",
}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _fill(element: Element, value: Any, tag: str) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, child in value.items():
            _fill(SubElement(element, key), child, key)
    elif isinstance(value, list | tuple):
        item_tag = _ITEM_TAGS.get(tag, "item")
        for item in value:
            _fill(SubElement(element, item_tag), item, item_tag)
    else:
        element.text = _text(value)


def to_xml(root: str, payload: Sequence[Any] | Mapping[str, Any]) -> bytes:
    """Serialize `payload` under `root`: a sequence gives one child per item."""
    element = Element(root)
    _fill(element, payload, root)
    # An XML parser reads a raw carriage return as a line feed (end-of-line handling), and
    # ElementTree writes it raw. Values are the only place it can occur, so a character
    # reference keeps it.
    text = tostring(element, encoding="unicode").replace("\r", "&#13;")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + text.encode("utf-8")


def to_json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render(
    fmt: str,
    root: str,
    payload: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return a response with `payload` as JSON, or as XML under the root element `root`."""
    if fmt == "xml":
        return Response(
            to_xml(root, payload), status_code=status, headers=headers, media_type=XML_TYPE
        )
    return Response(to_json(payload), status_code=status, headers=headers, media_type=JSON_TYPE)


def format_of_path(path: str) -> str:
    """Return the format a path requests by its suffix: JSON unless it ends in `.xml`."""
    return "xml" if path.endswith(".xml") else "json"


# HTTP statuses the spec's error list uses as they are; other client errors become 400.
# A 405 keeps its status so that a client sees a wrong method, not a wrong parameter, and a
# 429 so that it waits for `Retry-After` instead of changing its request.
_SPEC_STATUSES = {400, 403, 404, 405, 409, 413, 429, 500, 503}


def render_error(request: Request, status: int, _code: str, messages: Sequence[str]) -> Response:
    """Render any error under `/open311/` as the spec's list of `{code, description}`.

    Each message becomes one entry, in order, and every entry's code is the HTTP status. A
    description may repeat ids, codes, dates and coordinates from the request, but never a
    personal field (description, names, email, phone, address or media).
    """
    if status not in _SPEC_STATUSES:
        status = 400 if 400 <= status < 500 else status
    payload = [{"code": status, "description": message} for message in messages]
    return render(format_of_path(request.url.path), "errors", payload, status=status)
