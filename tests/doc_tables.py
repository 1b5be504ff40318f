"""Reading the tables of a docs page, for tests that hold a documented contract to the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def section(page: Path, title: str, level: int = 2) -> str:
    """Return the text of the heading `title` at `level` (2 for `## title`) up to the next
    heading of the same or a higher level."""
    text = page.read_text(encoding="utf-8")
    marker = "#" * level
    start = text.index(f"\n{marker} {title}\n")
    ends = [text.find(f"\n{'#' * higher} ", start + 1) for higher in range(1, level + 1)]
    found = [end for end in ends if end != -1]
    return text[start : min(found) if found else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """Return the cells of each table row whose first cell is a name in backticks."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


# JSON types as the tables' "type" column names them.
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "number": (int, float),
    "object": dict,
}


def field_table(text: str) -> dict[str, tuple[str, bool]]:
    """Return each field of a `| field | type | null | contents |` table in `text` with its
    JSON type and whether it can be null."""
    fields = {}
    for name, json_type, nullable, _contents in table_rows(text):
        fields[name.strip("`")] = (json_type, nullable == "yes")
    return fields


def type_errors(fields: dict[str, tuple[str, bool]], body: dict[str, Any]) -> list[str]:
    """Return the fields of `body` whose value breaks the documented type or null rule."""
    errors = []
    for name, (json_type, nullable) in fields.items():
        value = body.get(name)
        if value is None:
            if not nullable:
                errors.append(f"{name} is null")
        elif not isinstance(value, JSON_TYPES[json_type]) or isinstance(value, bool):
            errors.append(f"{name} is {type(value).__name__}, not {json_type}")
    return errors
