"""Warnings about a valid manifest: likely mistakes that do not block onboarding.

`hub tenants validate` and `hub tenants onboard` print them. Each is one `path: message` line
that describes what residents or staff would see and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from tenants.languages import primary_subtag, text_for
from tenants.manifest import Manifest
from tenants.profile import DEFAULT_STATUS_TEXTS

# Resident-facing texts per language that the hub ships, by kind, such as "status texts".
# A manifest overrides or adds them under `profile.status_texts`.
TextTables = Mapping[str, Mapping[str, Mapping[str, str]]]

# Codes that one warning lists before `...`.
MAX_CODES_SHOWN = 8

# A service area whose center is more than this many degrees of longitude away from the
# longitude that the time zone's UTC offset suggests (15 degrees per hour) is far from it.
# Zones stretch: Spain's UTC+1 suggests 15 degrees east, and Madrid is at 3.7 degrees west.
FAR_DEGREES = 45
# The swapped pair fits when it is within this many degrees.
NEAR_DEGREES = 30


def manifest_warnings(manifest: Manifest, texts: TextTables | None = None) -> list[str]:
    """Return the warnings about `manifest`, one `path: message` line each.

    `texts` are the hub's built-in resident texts by kind. The default is the status texts of
    `tenants.profile`. A caller that can read other tables (such as intake notices) passes
    them too.
    """
    tables = texts if texts is not None else {"status texts": DEFAULT_STATUS_TEXTS}
    return (
        _service_text_warnings(manifest)
        + _language_warnings(manifest, tables)
        + _holiday_warnings(manifest)
        + _swapped_position_warnings(manifest)
        + _unread_setting_warnings(manifest)
    )


def _service_text_warnings(manifest: Manifest) -> list[str]:
    """Warn once per field and language about the services that have no text in it."""
    warnings = []
    default = manifest.default_language
    for field in ("names", "descriptions"):
        for tag in manifest.languages:
            codes = []
            for service in manifest.services:
                texts = service.names if field == "names" else service.descriptions
                # A service without any description is fine, but one with some should have
                # them all.
                if texts and text_for(texts, tag) is None:
                    codes.append(service.code)
            if not codes:
                continue
            listed = ", ".join(codes[:MAX_CODES_SHOWN]) + (
                ", ..." if len(codes) > MAX_CODES_SHOWN else ""
            )
            warnings.append(
                f"services[].{field}: {len(codes)} service(s) have no text in {tag!r} "
                f"({listed}), so residents who read {tag} see the {default} text; add "
                f"{field}.{tag} to each"
            )
    return warnings


def _covers(table: Mapping[str, Mapping[str, str]], tag: str) -> set[str]:
    """Return the keys that `table` has for `tag` or its primary language subtag."""
    keys: set[str] = set()
    for language in (tag, primary_subtag(tag)):
        keys |= set(text_for(table, language) or {})
    return keys


def _language_warnings(manifest: Manifest, tables: TextTables) -> list[str]:
    warnings = []
    own = manifest.profile.status_texts
    for tag in manifest.languages:
        missing = []
        for kind, table in tables.items():
            needed = set(table.get("en", {}))
            if needed - _covers(table, tag) - _covers(own, tag):
                missing.append(kind)
        if missing:
            warnings.append(
                f"languages: the hub has no built-in {' or '.join(missing)} in {tag!r}, so "
                f"residents who read {tag} get them in English; add them under "
                f"profile.status_texts.{tag}"
            )
    return warnings


def _holiday_warnings(manifest: Manifest) -> list[str]:
    warnings = []
    first: dict[str, int] = {}
    for index, holiday in enumerate(manifest.calendar.holidays):
        day = holiday.date.isoformat()
        if day in first:
            warnings.append(
                f"calendar.holidays[{index}].date: {day} is listed twice (first at "
                f"[{first[day]}]); remove one"
            )
        else:
            first[day] = index
    return warnings


def _center(manifest: Manifest) -> tuple[float, float]:
    """Return the mean of the outer rings' positions as (first, second) coordinates."""
    positions = [
        position for polygon in manifest.service_area.polygons() for position in polygon[0][:-1]
    ]
    first = sum(p[0] for p in positions) / len(positions)
    second = sum(p[1] for p in positions) / len(positions)
    return first, second


def _offset_longitude(timezone: str) -> float:
    """Return the longitude that the zone's standard UTC offset suggests (15 degrees an hour)."""
    zone = ZoneInfo(timezone)
    offsets = [
        datetime(2026, month, 15, 12, tzinfo=zone).utcoffset().total_seconds()  # type: ignore[union-attr]
        for month in (1, 7)
    ]
    return min(offsets) / 3600 * 15


def _swapped_position_warnings(manifest: Manifest) -> list[str]:
    longitude, latitude = _center(manifest)
    expected = _offset_longitude(manifest.timezone)
    if abs(longitude - expected) <= FAR_DEGREES or abs(latitude - expected) > NEAR_DEGREES:
        return []
    return [
        f"service_area.coordinates: the area's center ({longitude:.2f}, {latitude:.2f}) is far "
        f"from the longitude near {expected:g} that {manifest.timezone} suggests, but the "
        "swapped pair fits; GeoJSON positions are [lon, lat], so swap each pair if they were "
        "written as [lat, lon]"
    ]


def _unread_setting_warnings(manifest: Manifest) -> list[str]:
    """Warn about keys of the `privacy`, `alerts` and `overflow` sections that the hub does
    not read. Those sections accept extra keys, so a misspelt setting would otherwise be
    ignored without a word and its default would apply."""
    warnings = []
    for name in ("privacy", "alerts", "overflow"):
        for path, section in _sections(name, getattr(manifest, name)):
            known = list(type(section).model_fields)
            read_by_features = getattr(type(section), "EXTENSION_KEYS", ())
            for key in section.model_extra or {}:
                if key in read_by_features:
                    continue
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                warnings.append(
                    f"{path}.{key}: the hub reads no setting of this name, so it has no "
                    f"effect and the defaults apply{hint}"
                )
    return warnings


def _sections(path: str, model: Any) -> Iterator[tuple[str, BaseModel]]:
    """Yield `model` and every section model inside it, with their paths."""
    if not isinstance(model, BaseModel):
        return
    yield path, model
    for field in type(model).model_fields:
        value = getattr(model, field)
        if isinstance(value, BaseModel):
            yield from _sections(f"{path}.{field}", value)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from _sections(f"{path}.{field}[{index}]", item)
