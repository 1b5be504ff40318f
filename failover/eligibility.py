"""Eligibility checks of partner centers for a contact, as pure functions over snapshots.

Each check returns the reason a partner is excluded, or None, so the routing decision can
record why every other center was passed over. Nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from hub.core.clock import as_utc


class CenterState(StrEnum):
    ACTIVE = "active"
    OVERLOADED = "overloaded"
    FULL = "full"
    STANDBY = "standby"
    UNREACHABLE = "unreachable"


# A partner in one of these states takes no new contacts. Standby centers are staffed on call
# and do take overflow, which is what they are on standby for.
BLOCKED_STATES = frozenset({CenterState.OVERLOADED, CenterState.FULL, CenterState.UNREACHABLE})

CHANNELS = ("call", "chat", "web", "sms")


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY = 24 * 60


@dataclass(frozen=True)
class Hours:
    """Weekly opening hours in a center's local time.

    `ranges[d]` lists (start, end) in minutes after midnight on weekday `d` (0 is Monday),
    with the end up to 1440. A night shift is two ranges: to 1440 on one day, from 0 the next.
    """

    ranges: tuple[tuple[tuple[int, int], ...], ...] = tuple(((0, _DAY),) for _ in range(7))

    @classmethod
    def from_weekly(cls, weekly: Mapping[str, Iterable[tuple[int, int]]]) -> Hours:
        """Build from weekday names (`monday`...) to (start, end) minute ranges."""
        unknown = set(weekly) - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"unknown weekday {sorted(unknown)[0]!r}; use {', '.join(WEEKDAYS)}")
        return cls(tuple(tuple(weekly.get(day, ())) for day in WEEKDAYS))

    def is_open(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.ranges[local.weekday()])


ALWAYS_OPEN = Hours()


@dataclass(frozen=True)
class AgreementTerms:
    """The terms under which one partner center takes contacts of one tenant."""

    id: str
    tenant_id: str
    center_id: str
    # Empty means any service group, channel or language the center itself supports.
    service_groups: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    # Largest share of the partner's staffed agents this tenant's open contacts may occupy.
    share_cap: float = 0.5
    hours: Hours | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    active: bool = True
    data_level: str = "minimal"
    # Multiplier on the partner's expected wait when ranking; above 1 makes it a later choice.
    cost_weight: float = 1.0


@dataclass(frozen=True)
class CenterSnapshot:
    """A center's configuration and live figures at one moment."""

    id: str
    tenant_id: str | None
    timezone: str = "UTC"
    skills: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    hours: Hours = ALWAYS_OPEN
    state: CenterState = CenterState.ACTIVE
    agents: int = 0
    expected_wait: float = 0.0
    # Open (waiting or in progress) contacts at this center, per owning tenant.
    open_by_tenant: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ContactTraits:
    tenant_id: str
    channel: str
    language: str
    service_group: str


@lru_cache(maxsize=1024)
def primary_language(tag: str) -> str:
    """Return the primary subtag of a BCP 47 tag, lower-cased (`es-US` -> `es`)."""
    return tag.split("-", 1)[0].strip().lower()


def speaks(languages: Iterable[str], tag: str) -> bool:
    """Return whether any of `languages` has the primary subtag of `tag`."""
    wanted = primary_language(tag)
    return any(primary_language(lang) == wanted for lang in languages)


def share_limit(terms: AgreementTerms, center: CenterSnapshot) -> int:
    """Return the most open contacts of the tenant that the center may hold under `terms`."""
    return int(terms.share_cap * center.agents)


def exclusion_reason(
    terms: AgreementTerms,
    center: CenterSnapshot,
    contact: ContactTraits,
    now: datetime,
) -> str | None:
    """Return why `center` may not take `contact` under `terms`, or None when it may."""
    now = as_utc(now)
    if terms.tenant_id != contact.tenant_id or terms.center_id != center.id:
        return "no_agreement"
    if not terms.active:
        return "agreement_inactive"
    if terms.valid_from is not None and now < as_utc(terms.valid_from):
        return "agreement_not_started"
    if terms.valid_until is not None and now >= as_utc(terms.valid_until):
        return "agreement_expired"
    if terms.channels and contact.channel not in terms.channels:
        return "channel"
    if contact.service_group not in center.skills:
        return "skill"
    if terms.service_groups and contact.service_group not in terms.service_groups:
        return "skill"
    if not speaks(center.languages, contact.language):
        return "language"
    if terms.languages and not speaks(terms.languages, contact.language):
        return "language"

    local = now.astimezone(ZoneInfo(center.timezone))
    if not center.hours.is_open(local):
        return "hours"
    if terms.hours is not None and not terms.hours.is_open(local):
        return "hours"

    if center.state in BLOCKED_STATES:
        return f"state_{center.state.value}"
    if center.open_by_tenant.get(contact.tenant_id, 0) >= share_limit(terms, center):
        return "share_cap"
    return None


@dataclass(frozen=True)
class Candidate:
    center: CenterSnapshot
    terms: AgreementTerms

    @property
    def score(self) -> float:
        # One second is added so a cost weight still separates partners that have no wait.
        return (self.center.expected_wait + 1.0) * self.terms.cost_weight


def eligible_partners(
    contact: ContactTraits,
    agreements: Iterable[AgreementTerms],
    centers: Mapping[str, CenterSnapshot],
    now: datetime,
) -> tuple[list[Candidate], dict[str, str]]:
    """Return eligible partners ranked best first, and the exclusion reason per other center."""
    eligible: list[Candidate] = []
    excluded: dict[str, str] = {}
    for terms in agreements:
        center = centers.get(terms.center_id)
        if center is None:
            excluded[terms.center_id] = "center_unknown"
            continue
        reason = exclusion_reason(terms, center, contact, now)
        if reason is None:
            eligible.append(Candidate(center, terms))
        else:
            excluded[center.id] = reason
    eligible.sort(key=lambda c: (c.score, c.center.id))
    return eligible, excluded
