"""The field reference of tenant manifests, written from the manifest models.

`docs/manifest.md` is this module's output, and a test checks that it matches the models, so the
reference cannot fall behind a change of a field. Rewrite it with
`python -m tenants.reference > docs/manifest.md`.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from tenants.manifest import Manifest
from tenants.texts import PLACEHOLDERS, TEXT_KEYS

_INTRO = """# Tenant manifest reference

A tenant manifest is a YAML file that `hub tenants validate FILE` checks and
`hub tenants onboard FILE` stores. The examples in `tenants/examples/` use most fields. This
page lists every field, section by section, from the models that validate manifests
(`tenants/manifest.py`). A field marked required has no default. A field that a section does
not list is an error, so a misspelled name is reported with its path, except in the sections
that say they keep such fields. Paths use `[]` for each item of a list.

Write dates as `2026-07-04` and times of day as `08:00`, quoted or not: the hub reads them as
the text written, where plain YAML would turn some of them into other types.

This page is generated: `python -m tenants.reference > docs/manifest.md`.
"""


# Rules that validators check and the schema does not state, by field path.
_NOTES = {
    "id": "a slug: lower-case letters, digits and hyphens, 1 to 64 characters",
    "jurisdiction_id": "the city's domain in lower case, such as `nyc.gov`",
    "timezone": "an IANA time zone, such as `America/New_York`; abbreviations such as `EST` "
    "or `CST` are rejected with the zone to use",
    "languages": "registered BCP 47 tags such as `en` or `es-US`, each once (case is "
    "ignored); the first is the default",
    "region": "a slug, shared by the tenants of one region",
    "service_area.coordinates": "GeoJSON rings of [longitude, latitude] pairs; each ring "
    "closed (last point equal to the first), at least 4 points, not crossing itself",
    "services[].names": "language tag to text; must include the default language",
    "services[].agency": "the code of an agency in `agencies`",
    "services[].attributes[].datatype": "one of `string`, `number`, `datetime`, `text`, "
    "`singlevaluelist`, `multivaluelist`; the two list types need `values`",
    "services[].attributes[].descriptions": "language tag to text",
    "agencies[].webhook_url": "an `http://` or `https://` URL",
    "agencies[].max_deliveries_per_minute": "deliveries per minute over all workers, such as "
    "60 or 0.5; none means no cap",
    "routing.default": "the code of an agency in `agencies`",
    "routing.rules[].agency": "the code of an agency in `agencies`",
    "routing.rules[].service_code": "give exactly one of `service_code` and `group`",
    "calendar.hours": "weekday name (`monday` to `sunday`) to ranges `HH:MM-HH:MM`, in "
    "order and not overlapping",
    "privacy.retention_days": "data class to days, at least 1",
    "privacy.decryption_purposes": "empty or left out: the default staff purposes "
    "(`staff.request_view`); the hub's own purposes apply to every tenant, see docs/privacy.md",
    "privacy.decryption_purposes[].code": "2 to 64 lower-case letters, digits and `.` `_` `:` "
    "`-`, starting with a letter, such as `staff.request_view`; each code once",
    "privacy.decryption_purposes[].descriptions": "language tag to text; must include English "
    "(`en`)",
    "alerts.rate_limits": "channel to messages per second, above 0",
    "open311.max_posts_per_minute_per_key": "`POST requests` calls per minute per API key, "
    "over all API processes; `null` turns the limit off; see docs/open311.md",
    "overflow.centers[].languages": "registered BCP 47 tags such as `en` or `es-US`",
    "overflow.centers[].hours": "the same format as `calendar.hours`",
    "profile.status_texts": "a language of `languages` to text key to text; the keys are "
    + ", ".join(f"`{key}`" for key in TEXT_KEYS)
    + "; "
    + "; ".join(
        f"`{key}` may use " + ", ".join(f"`{{{name}}}`" for name in names)
        for key, names in PLACEHOLDERS.items()
    )
    + " and writes a literal brace as `{{` or `}}`; the other texts take no placeholders "
    "and no braces",
}


def _definition(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    """Return the object definition that `node` refers to, directly or in an optional value."""
    for candidate in [node, *node.get("anyOf", [])]:
        ref = candidate.get("$ref")
        if ref is not None:
            return schema["$defs"][ref.rsplit("/", 1)[-1]]
    return None


def _type(schema: dict[str, Any], node: dict[str, Any]) -> str:
    """Return a short description of a field's type, such as `list of text`."""
    if "enum" in node:
        return "one of " + ", ".join(f"`{value}`" for value in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "anyOf" in node:
        kinds = [_type(schema, item) for item in node["anyOf"] if item.get("type") != "null"]
        return " or ".join(kinds)
    if "$ref" in node:
        return "section" if _definition(schema, node) is not None else "value"
    kind = node.get("type")
    if kind == "array":
        items = node.get("items", {})
        if "prefixItems" in node:
            return "pair of numbers"
        return f"list of {_plural(_type(schema, items))}"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"map to {_type(schema, values)}"
        return "map"
    if node.get("format") == "date":
        return "date (`YYYY-MM-DD`)"
    names = {"string": "text", "integer": "integer", "number": "number", "boolean": "true or false"}
    return names.get(str(kind), str(kind or "value"))


def _plural(kind: str) -> str:
    return {"section": "sections", "number": "numbers", "value": "values"}.get(kind, kind)


def _limits(node: dict[str, Any]) -> str:
    """Return the checks the schema states for one field, such as `1 to 200 characters`."""
    options = [node, *node.get("anyOf", [])]
    parts: list[str] = []
    for option in options:
        low, high = option.get("minLength"), option.get("maxLength")
        if low is not None or high is not None:
            parts.append(
                f"{low or 0} to {high} characters" if high else f"at least {low} character(s)"
            )
        if "minItems" in option or "maxItems" in option:
            low_items, high_items = option.get("minItems", 0), option.get("maxItems")
            parts.append(
                f"{low_items} to {high_items} items"
                if high_items
                else f"at least {low_items} item(s)"
            )
        for key, label in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        ):
            if key in option:
                parts.append(f"{label} {option[key]}")
        if "pattern" in option:
            parts.append(f"matches `{option['pattern']}`")
    return "; ".join(parts)


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if value is None:
        return "none"
    if value in ([], {}, ""):
        return "empty"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _sections(
    schema: dict[str, Any], path: str, definition: dict[str, Any], seen: set[str], noted: set[str]
) -> list[str]:
    """Return the Markdown of one section and of the sections below it, depth first, and add
    the paths whose notes it used to `noted`."""
    required = set(definition.get("required", []))

    lines = [f"## `{path}`", ""]
    description = inspect.cleandoc(definition.get("description", ""))
    if description:
        lines += [description, ""]
    if definition.get("additionalProperties", True) is not False:
        lines += ["Fields this page does not list are kept as they are, for later versions.", ""]

    lines += ["| field | type | required | default | checks |", "|---|---|---|---|---|"]
    below: list[tuple[str, dict[str, Any]]] = []
    for name, node in definition.get("properties", {}).items():
        needed = "yes" if name in required else ""
        field_path = name if path == "manifest" else f"{path}.{name}"
        checks = [part for part in (_limits(node), _NOTES.get(field_path, "")) if part]
        if field_path in _NOTES:
            noted.add(field_path)
        lines.append(
            f"| `{name}` | {_type(schema, node)} | {needed} | {_default(node)} "
            f"| {'; '.join(checks)} |"
        )

        child = _definition(schema, node)
        suffix = ""
        if child is None and node.get("type") == "array":
            child = _definition(schema, node.get("items", {}))
            suffix = "[]"
        if child is None and isinstance(node.get("additionalProperties"), dict):
            child = _definition(schema, node["additionalProperties"])
            suffix = "{name}"
        if child is not None:
            below.append((field_path + suffix, child))
    lines.append("")

    for child_path, child in below:
        key = json.dumps(child, sort_keys=True)
        if key in seen:
            lines += [f"`{child_path}` has the fields listed above for the same section.", ""]
            continue
        seen.add(key)
        lines += _sections(schema, child_path, child, seen, noted)
    return lines


def manifest_reference() -> str:
    """Return the Markdown field reference of tenant manifests.

    Raises ValueError when a note names a field the models no longer have.
    """
    schema = Manifest.model_json_schema()
    noted: set[str] = set()
    lines = [_INTRO, *_sections(schema, "manifest", schema, set(), noted)]
    stale = sorted(set(_NOTES) - noted)
    if stale:
        raise ValueError(f"notes name fields the manifest models do not have: {', '.join(stale)}")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(manifest_reference(), end="")
