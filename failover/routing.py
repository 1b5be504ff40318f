"""The routing decision for one new contact: home, or the best eligible partner."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from failover.eligibility import (
    AgreementTerms,
    CenterSnapshot,
    ContactTraits,
    eligible_partners,
)

HOME = "home"
PARTNER = "partner"


@dataclass(frozen=True)
class Decision:
    target: str  # HOME or PARTNER
    center_id: str | None
    reason: str
    agreement_id: str | None = None
    data_level: str | None = None
    # Partner center id -> the reason it was passed over (`eligibility.exclusion_reason`).
    excluded: Mapping[str, str] = field(default_factory=dict)


def encode_excluded(excluded: Mapping[str, str]) -> str | None:
    """Return the passed-over partners as the compact JSON object the contact row stores, or
    None when there are none (every decision outside overflow and disaster mode)."""
    if not excluded:
        return None
    return json.dumps(dict(sorted(excluded.items())), separators=(",", ":"))


def decode_excluded(stored: str | None) -> dict[str, str]:
    """Return the passed-over partners from a contact row's `excluded_partners`."""
    return json.loads(stored) if stored else {}


def decide(
    contact: ContactTraits,
    *,
    home_center_id: str | None,
    overflow_on: bool,
    disaster: bool,
    agreements: Iterable[AgreementTerms],
    centers: Mapping[str, CenterSnapshot],
    now: datetime,
) -> Decision:
    """Choose where `contact` goes.

    Without overflow or disaster mode every contact stays home. Otherwise it goes to the
    eligible partner with the lowest expected wait after cost weight. When no partner is
    eligible it queues at home, so in disaster mode it waits for the center to return.
    """
    if not overflow_on and not disaster:
        return Decision(HOME, home_center_id, "normal")

    eligible, excluded = eligible_partners(contact, agreements, centers, now)
    if not eligible:
        reason = "disaster_no_partner" if disaster else "no_eligible_partner"
        return Decision(HOME, home_center_id, reason, excluded=excluded)

    best = eligible[0]
    return Decision(
        PARTNER,
        best.center.id,
        "disaster" if disaster else "overflow",
        agreement_id=best.terms.id,
        data_level=best.terms.data_level,
        excluded=excluded,
    )
