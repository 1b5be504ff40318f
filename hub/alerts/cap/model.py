"""The OASIS CAP 1.2 message as Python dataclasses, one class per CAP structure.

Field order follows the order of elements in the CAP 1.2 schema, because the writer emits them
in that order. Optional elements are None or empty lists. Times are timezone-aware datetimes
that keep the offset the sender used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
XMLDSIG_NAMESPACE = "http://www.w3.org/2000/09/xmldsig#"

STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
SCOPES = ("Public", "Restricted", "Private")
CATEGORIES = (
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
)
RESPONSE_TYPES = (
    "Shelter",
    "Evacuate",
    "Prepare",
    "Execute",
    "Avoid",
    "Monitor",
    "Assess",
    "AllClear",
    "None",
)
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")

# A point is (latitude, longitude) in WGS 84 degrees, the order CAP uses in its text.
Point = tuple[float, float]


@dataclass
class NamedValue:
    """A `valueName`/`value` pair: eventCode, parameter and geocode all use this shape."""

    value_name: str | None = None
    value: str | None = None


@dataclass
class Circle:
    """A CAP circle: a centre point and a radius in kilometres."""

    lat: float
    lon: float
    radius_km: float


@dataclass
class Resource:
    resource_desc: str | None = None
    mime_type: str | None = None
    size: int | None = None
    uri: str | None = None
    deref_uri: str | None = None
    digest: str | None = None


@dataclass
class Area:
    area_desc: str | None = None
    polygons: list[list[Point]] = field(default_factory=list)
    circles: list[Circle] = field(default_factory=list)
    geocodes: list[NamedValue] = field(default_factory=list)
    # Decimal keeps the sender's digits, so a round trip writes the same value back.
    altitude: Decimal | None = None
    ceiling: Decimal | None = None


@dataclass
class Info:
    language: str | None = None
    categories: list[str] = field(default_factory=list)
    event: str | None = None
    response_types: list[str] = field(default_factory=list)
    urgency: str | None = None
    severity: str | None = None
    certainty: str | None = None
    audience: str | None = None
    event_codes: list[NamedValue] = field(default_factory=list)
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: list[NamedValue] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    areas: list[Area] = field(default_factory=list)

    @property
    def effective_language(self) -> str:
        """The language code, with the schema's default `en-US` when the element is absent."""
        return self.language or "en-US"


@dataclass(frozen=True)
class Reference:
    """One entry of `references`: the earlier message as sender, identifier and sent time."""

    sender: str
    identifier: str
    sent: str

    def to_text(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"


@dataclass
class Alert:
    identifier: str | None = None
    sender: str | None = None
    sent: datetime | None = None
    status: str | None = None
    msg_type: str | None = None
    source: str | None = None
    scope: str | None = None
    restriction: str | None = None
    addresses: str | None = None
    codes: list[str] = field(default_factory=list)
    note: str | None = None
    # The raw `references` text; `reference_list()` splits it into entries.
    references: str | None = None
    incidents: str | None = None
    infos: list[Info] = field(default_factory=list)

    def reference_list(self) -> list[Reference]:
        """Split `references` into entries; malformed entries are skipped (validation reports
        them)."""
        if not self.references:
            return []
        entries = []
        for token in self.references.split():
            parts = token.split(",")
            if len(parts) == 3 and all(parts):
                entries.append(Reference(*parts))
        return entries

    def expires(self) -> datetime | None:
        """Return the latest `expires` over the info blocks, or None when any block has none."""
        times = [info.expires for info in self.infos]
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)
