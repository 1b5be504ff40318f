"""Decryption purposes: which purposes a tenant's personal data may be decrypted for.

A purpose is declared in one of two ways. The hub's own code declares the purposes it decrypts
for itself (agency delivery, alert delivery, transfers, exports, overflow views) with
`declare_purpose`, and those apply to every tenant. Each tenant declares the purposes its staff
may give to the staff API and CLI in its manifest's `privacy.decryption_purposes`. A tenant
whose manifest declares none gets `DEFAULT_STAFF_PURPOSES`. `privacy.access` rejects a
decryption for any other purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, column, select, table
from sqlalchemy.orm import Session

PURPOSE = re.compile(r"^[a-z][a-z0-9_.:-]{1,63}$")
PURPOSE_RULE = (
    "use 2-64 lower-case letters, digits and . _ : - starting with a letter, "
    "such as staff.request_view"
)

DECLARED_BY_HUB = "hub"
DECLARED_BY_MANIFEST = "manifest"
DECLARED_BY_DEFAULT = "default"

STAFF_REQUEST_VIEW = "staff.request_view"
# The staff purposes of a tenant whose manifest declares none, as the manifest writes them:
# a code and its description per language tag.
DEFAULT_STAFF_PURPOSES: tuple[dict[str, Any], ...] = (
    {
        "code": STAFF_REQUEST_VIEW,
        "descriptions": {
            "en": "Read a service request's personal fields and notes to handle the request "
            "or answer the resident who filed it.",
        },
    },
)

# Purposes that the hub's code decrypts for, by code, with an English description.
_HUB_PURPOSES: dict[str, str] = {}


@dataclass(frozen=True)
class DeclaredPurpose:
    """A purpose that a tenant's data may be decrypted for, and who declared it."""

    code: str
    description: str
    declared_by: str


def declare_purpose(code: str, description: str) -> str:
    """Declare a purpose that the hub's code decrypts for, for every tenant, and return it."""
    if not PURPOSE.match(code):
        raise ValueError(f"decryption purpose {code!r} is invalid; {PURPOSE_RULE}")
    if not description.strip():
        raise ValueError(f"decryption purpose {code!r} is missing a description")
    _HUB_PURPOSES[code] = description
    return code


def is_hub_purpose(code: str) -> bool:
    return code in _HUB_PURPOSES


def has_metric_label(code: str) -> bool:
    """Tell whether metrics may name `code`: the hub's purposes and the default staff ones.

    A purpose that only a manifest declares is not, so that manifests cannot add series
    without end.
    """
    return code in _HUB_PURPOSES or any(p["code"] == code for p in DEFAULT_STAFF_PURPOSES)


def english_description(descriptions: dict[str, str]) -> str:
    """Return the English text of a manifest's `descriptions` (`en` or a tag such as `en-US`)."""
    for tag, text in descriptions.items():
        if tag.lower() == "en" or tag.lower().startswith("en-"):
            return text
    return ""


def staff_purposes(session: Session, tenant_id: str) -> list[DeclaredPurpose]:
    """Read the staff purposes of the tenant's stored manifest, or the defaults when its list
    is empty or missing.

    The tenants package sits above this one, so the manifest is read by plain SQL, and only
    its `privacy.decryption_purposes` part.
    """
    tenants = table("tenants", column("id"), column("manifest", JSON))
    declared = session.execute(
        select(tenants.c.manifest["privacy"]["decryption_purposes"]).where(
            tenants.c.id == tenant_id
        )
    ).scalar()
    if not declared:
        entries, declared_by = DEFAULT_STAFF_PURPOSES, DECLARED_BY_DEFAULT
    else:
        entries, declared_by = declared, DECLARED_BY_MANIFEST
    return [
        DeclaredPurpose(
            code=entry["code"],
            description=english_description(entry.get("descriptions") or {}),
            declared_by=declared_by,
        )
        for entry in entries
    ]


def declared_purposes(session: Session, tenant_id: str) -> list[DeclaredPurpose]:
    """Return every purpose the tenant's data may be decrypted for: the hub's, then its staff
    purposes. A staff purpose with the code of a hub purpose is listed once, as the hub's."""
    purposes = [
        DeclaredPurpose(code, description, DECLARED_BY_HUB)
        for code, description in sorted(_HUB_PURPOSES.items())
    ]
    purposes += [p for p in staff_purposes(session, tenant_id) if p.code not in _HUB_PURPOSES]
    return purposes
