"""Build a manifest `services:` section from a city's Open311 GeoReport v2 service list.

Input is the body of `GET services.json` (a JSON array) or `GET services.xml` (`<services>`),
optionally with service definitions (`GET services/{code}.json|.xml`) that add attributes.
XML is parsed with defusedxml, so entity expansion and external DTDs are rejected.

Every imported entry is validated against the manifest schema; entries that fail are skipped
with the reason, never silently changed. Names are tidied for residents (SF311 uses names such
as `Cans_Left_Out_24x7`), and the city's original name is kept in `aliases` so that importers of
its 311 records can map categories to codes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from pydantic import ValidationError

from hub.core.errors import InvalidInput
from tenants.manifest import DATATYPES, LIST_DATATYPES, SERVICE_CODE, Attribute, ServiceSpec

_SPACES = re.compile(r"\s+")


@dataclass
class CatalogImport:
    """The services and agencies read from a service list, and the entries skipped."""

    source_format: str
    services: list[dict[str, Any]] = field(default_factory=list)
    agencies: list[dict[str, Any]] = field(default_factory=list)
    # (service code or position, reason) for each entry left out.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Codes whose list entry has `metadata: true` but for which no definition was given.
    missing_definitions: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        """Return the `services:` (and `agencies:` when known) sections as manifest YAML."""
        document: dict[str, Any] = {"services": self.services}
        if self.agencies:
            document["agencies"] = self.agencies
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def _tidy_name(name: str) -> str:
    return _SPACES.sub(" ", name.replace("_", " ")).strip()


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _truthy(value: Any) -> bool:
    return _text(value).lower() in ("true", "1", "yes")


# --- reading the documents -------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: Any, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return _text(child.text)
    return ""


def _children(element: Any, name: str) -> list[Any]:
    return [child for child in element if _local(child.tag) == name]


def _xml_root(text: str, source: str) -> Any:
    try:
        return ElementTree.fromstring(text)
    except DefusedXmlException:
        raise InvalidInput(
            f"{source}: XML with entity declarations or DTDs is rejected; remove them"
        ) from None
    except ElementTree.ParseError as exc:
        raise InvalidInput(f"{source}: not well-formed XML ({exc})") from None


def _services_from_xml(root: Any) -> list[dict[str, Any]]:
    entries = []
    for element in _children(root, "service"):
        entries.append(
            {
                "service_code": _child_text(element, "service_code"),
                "service_name": _child_text(element, "service_name"),
                "description": _child_text(element, "description"),
                "metadata": _child_text(element, "metadata"),
                "type": _child_text(element, "type"),
                "keywords": _child_text(element, "keywords"),
                "group": _child_text(element, "group"),
            }
        )
    return entries


def _definition_from_xml(root: Any) -> dict[str, Any]:
    attributes = []
    for element in _children(root, "attribute"):
        values = []
        for values_element in _children(element, "values"):
            for value in _children(values_element, "value"):
                values.append(
                    {"key": _child_text(value, "key"), "name": _child_text(value, "name")}
                )
        attributes.append(
            {
                "variable": _child_text(element, "variable"),
                "code": _child_text(element, "code"),
                "datatype": _child_text(element, "datatype"),
                "required": _child_text(element, "required"),
                "datatype_description": _child_text(element, "datatype_description"),
                "order": _child_text(element, "order"),
                "description": _child_text(element, "description"),
                "values": values,
            }
        )
    return {"service_code": _child_text(root, "service_code"), "attributes": attributes}


def read_document(path: str | Path) -> tuple[str, Any]:
    """Read a services list or service definition file; return its format and parsed data.

    JSON stays as parsed. XML becomes the same shape as the JSON form: a list of service
    entries, or one definition mapping with `service_code` and `attributes`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidInput(f"file not found: {path}; check the path") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not UTF-8 text; save it as UTF-8") from None

    stripped = text.lstrip()
    if stripped.startswith("<"):
        root = _xml_root(text, str(path))
        if _local(root.tag) == "services":
            return "xml", _services_from_xml(root)
        if _local(root.tag) == "service_definition":
            return "xml", _definition_from_xml(root)
        raise InvalidInput(
            f"{path}: root element <{_local(root.tag)}> is neither <services> "
            "nor <service_definition>"
        )
    try:
        return "json", json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{path}: not valid JSON or XML (JSON error at line {exc.lineno}: {exc.msg})"
        ) from None


# --- converting to manifest entries ----------------------------------------------------------


def _attribute(raw: dict[str, Any], language: str) -> dict[str, Any]:
    """Convert one Open311 attribute; raise ValueError when it does not fit the manifest."""
    datatype = _text(raw.get("datatype")).lower()
    if datatype not in DATATYPES:
        raise ValueError(f"attribute {raw.get('code')!r} has datatype {datatype!r}")
    description = _text(raw.get("description")) or _text(raw.get("code"))
    attribute: dict[str, Any] = {
        "code": _text(raw.get("code")),
        "datatype": datatype,
        "descriptions": {language: description},
        "variable": _truthy(raw.get("variable", True)),
        "required": _truthy(raw.get("required")),
        "order": int(_text(raw.get("order")) or 0),
    }
    datatype_description = _text(raw.get("datatype_description"))
    if datatype_description:
        attribute["datatype_descriptions"] = {language: datatype_description}
    if datatype in LIST_DATATYPES:
        attribute["values"] = [
            {
                "key": _text(v.get("key")),
                "names": {language: _text(v.get("name")) or _text(v.get("key"))},
            }
            for v in raw.get("values") or []
        ]
    Attribute.model_validate(attribute)
    return attribute


def _department(entry: dict[str, Any]) -> dict[str, str] | None:
    """Return the first service department of a Boston-style `definitions` extension."""
    definitions = entry.get("definitions")
    if not isinstance(definitions, dict):
        return None
    departments = definitions.get("service_departments") or []
    if not departments or not isinstance(departments[0], dict):
        return None
    code = _text(departments[0].get("code"))
    if not code:
        return None
    return {"code": code, "name": _text(departments[0].get("name")) or code}


# GeoReport v2 gives `keywords` as a comma-separated list. Some cities separate them with
# semicolons instead, or mix both in one list (Boston's services.json).
KEYWORD_SEPARATORS = re.compile(r"[,;]")


def _keywords(value: Any) -> list[str]:
    """Return the keywords of a service list entry, split at commas and semicolons, each once
    in the order first given."""
    texts = [_text(v) for v in value] if isinstance(value, list) else [_text(value)]
    parts = [part.strip() for text in texts for part in KEYWORD_SEPARATORS.split(text)]
    return list(dict.fromkeys(part for part in parts if part))


def _service(
    entry: dict[str, Any], language: str, definition: dict[str, Any] | None
) -> dict[str, Any]:
    code = _text(entry.get("service_code"))
    original_name = _text(entry.get("service_name"))
    name = _tidy_name(original_name) or code
    service: dict[str, Any] = {"code": code, "names": {language: name}}

    description = _text(entry.get("description"))
    if description:
        service["descriptions"] = {language: _SPACES.sub(" ", description)}
    if original_name and original_name != name:
        service["aliases"] = [original_name]
    service_type = _text(entry.get("type")).lower()
    if service_type in ("realtime", "batch", "blackbox"):
        service["type"] = service_type
    keywords = _keywords(entry.get("keywords"))
    if keywords:
        service["keywords"] = keywords
    group = _text(entry.get("group"))
    if group:
        service["group"] = group[:120]

    if definition is not None:
        attributes = []
        for raw in definition.get("attributes") or []:
            try:
                attributes.append(_attribute(raw, language))
            except (ValueError, ValidationError):
                # Attributes the manifest cannot express (e.g. Boston's `informational`)
                # are dropped; the service itself is still imported.
                continue
        if attributes:
            service["attributes"] = attributes
    department = _department(entry)
    if department is not None:
        service["agency"] = department["code"]

    ServiceSpec.model_validate(service)
    return service


def build_catalog(
    services_path: str | Path,
    *,
    language: str = "en",
    definition_paths: list[str | Path] | None = None,
) -> CatalogImport:
    """Read a service list (and optional service definitions) into manifest entries."""
    source_format, data = read_document(services_path)
    if not isinstance(data, list):
        raise InvalidInput(
            f"{services_path}: expected a list of services (GET services.json or services.xml)"
        )

    if any(isinstance(entry, dict) and "service_request_id" in entry for entry in data):
        raise InvalidInput(
            f"{services_path}: this is a list of service requests (its entries have "
            "service_request_id), not a service list; give the city's GET services.json or "
            "services.xml"
        )

    listed = {_text(entry.get("service_code")) for entry in data if isinstance(entry, dict)}
    definitions: dict[str, dict[str, Any]] = {}
    for path in definition_paths or []:
        _, definition = read_document(path)
        if not isinstance(definition, dict) or not _text(definition.get("service_code")):
            raise InvalidInput(f"{path}: not a service definition with a service_code")
        code = _text(definition["service_code"])
        if code not in listed:
            raise InvalidInput(
                f"{path}: defines service {code!r}, which is not in {services_path}; give the "
                "definition of a listed service or leave this file out"
            )
        definitions[code] = definition

    result = CatalogImport(source_format=source_format)
    agencies: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    for position, entry in enumerate(data):
        label = f"[{position}]"
        if not isinstance(entry, dict):
            result.skipped.append((label, "entry is not an object"))
            continue
        code = _text(entry.get("service_code"))
        label = code or label
        if not SERVICE_CODE.match(code):
            result.skipped.append((label, "service_code is missing or not a valid code"))
            continue
        if code in seen:
            result.skipped.append((label, "duplicate service_code; the first entry was kept"))
            continue
        try:
            service = _service(entry, language, definitions.get(code))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            result.skipped.append((label, f"{where}: {first['msg']}"))
            continue
        seen.add(code)
        result.services.append(service)
        department = _department(entry)
        if department is not None:
            agencies.setdefault(department["code"], department)
        if _truthy(entry.get("metadata")) and code not in definitions:
            result.missing_definitions.append(code)

    result.agencies = list(agencies.values())
    return result
