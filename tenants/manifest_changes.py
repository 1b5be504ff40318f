"""The changes that onboarding an edited manifest makes to a stored tenant, as lines for a person.

A re-applied manifest updates a live city in place, so `hub tenants onboard` shows a changed
time zone or a deactivated agency before (with `--dry-run`) or as it applies the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tenants.manifest import Manifest

# Top-level sections that `ManifestChanges` reports field by field. A change in any other
# section is listed by the section's name only.
_DETAILED = {"timezone", "languages", "service_area", "services", "agencies"}


@dataclass(frozen=True)
class CodeChanges:
    """Codes of services or agencies that a manifest adds, deactivates or changes."""

    added: tuple[str, ...] = ()
    deactivated: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def line(self, noun: str) -> str | None:
        parts = [
            f"{label} {', '.join(codes)}"
            for label, codes in (
                ("added", self.added),
                ("deactivated", self.deactivated),
                ("changed", self.changed),
            )
            if codes
        ]
        return f"{noun}: {'; '.join(parts)}" if parts else None


@dataclass(frozen=True)
class ManifestChanges:
    """The differences between a tenant's stored manifest and a new one.

    `timezone` and `languages` are (stored, new) pairs, or None when equal. `other_sections`
    names the other top-level sections that differ, such as `calendar` or `routing`. Webhook
    secrets are not compared, because the stored manifest never contains them.
    """

    timezone: tuple[str, str] | None
    languages: tuple[list[str], list[str]] | None
    service_area_changed: bool
    services: CodeChanges
    agencies: CodeChanges
    other_sections: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.lines()

    def lines(self) -> list[str]:
        """Return one line per kind of change, or no lines when nothing differs."""
        lines = []
        if self.timezone is not None:
            lines.append(f"time zone: {self.timezone[0]} -> {self.timezone[1]}")
        if self.languages is not None:
            old, new = self.languages
            lines.append(f"languages: {', '.join(old)} -> {', '.join(new)}")
        if self.service_area_changed:
            lines.append("service area: changed")
        for noun, codes in (("services", self.services), ("agencies", self.agencies)):
            line = codes.line(noun)
            if line is not None:
                lines.append(line)
        if self.other_sections:
            lines.append(f"also changed: {', '.join(self.other_sections)}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timezone"] = (
            {"from": self.timezone[0], "to": self.timezone[1]} if self.timezone else None
        )
        data["languages"] = (
            {"from": self.languages[0], "to": self.languages[1]} if self.languages else None
        )
        return data


def _entries(section: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["code"]: entry for entry in section if isinstance(entry, dict)}


def _code_changes(stored: list[dict[str, Any]], new: list[dict[str, Any]]) -> CodeChanges:
    """Compare two lists of entries with a `code`. An entry with `active: false`, as a
    service may have, counts as absent."""
    before = {code: e for code, e in _entries(stored).items() if e.get("active", True)}
    after = {code: e for code, e in _entries(new).items() if e.get("active", True)}
    return CodeChanges(
        added=tuple(code for code in after if code not in before),
        deactivated=tuple(code for code in before if code not in after),
        changed=tuple(code for code in after if code in before and before[code] != after[code]),
    )


def manifest_changes(stored: dict[str, Any], manifest: Manifest) -> ManifestChanges:
    """Compare a tenant's stored manifest (`Manifest.stored_form`) with `manifest`."""
    new = manifest.stored_form()
    timezone = None
    if stored.get("timezone") != new["timezone"]:
        timezone = (str(stored.get("timezone")), new["timezone"])
    languages = None
    if stored.get("languages") != new["languages"]:
        languages = (list(stored.get("languages") or []), list(new["languages"]))
    other = tuple(
        key
        for key in new
        if key not in _DETAILED and key not in ("id", "jurisdiction_id")
        if stored.get(key) != new[key]
    )
    return ManifestChanges(
        timezone=timezone,
        languages=languages,
        service_area_changed=stored.get("service_area") != new["service_area"],
        services=_code_changes(stored.get("services") or [], new["services"]),
        agencies=_code_changes(stored.get("agencies") or [], new["agencies"]),
        other_sections=other,
    )
