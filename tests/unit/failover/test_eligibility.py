from dataclasses import replace
from datetime import UTC, datetime

import pytest

from failover.eligibility import (
    WEEKDAYS,
    AgreementTerms,
    CenterSnapshot,
    CenterState,
    ContactTraits,
    Hours,
    eligible_partners,
    exclusion_reason,
)
from failover.routing import HOME, PARTNER, decide

# A Wednesday, 15:00 UTC = 10:00 in New York.
NOW = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)
CONTACT = ContactTraits(
    tenant_id="springfield", channel="call", language="es-US", service_group="streets"
)
CENTER = CenterSnapshot(
    id="partner-a",
    tenant_id=None,
    timezone="America/New_York",
    skills=frozenset({"streets", "sanitation"}),
    languages=frozenset({"en", "es"}),
    hours=Hours.from_weekly({day: [(8 * 60, 20 * 60)] for day in WEEKDAYS[:5]}),
    state=CenterState.ACTIVE,
    agents=20,
    expected_wait=15.0,
)
TERMS = AgreementTerms(id="ag-1", tenant_id="springfield", center_id="partner-a", share_cap=0.5)


def test_eligible_baseline():
    assert exclusion_reason(TERMS, CENTER, CONTACT, NOW) is None


@pytest.mark.parametrize(
    ("terms", "center", "contact", "now", "reason"),
    [
        (TERMS, replace(CENTER, skills=frozenset({"sanitation"})), CONTACT, NOW, "skill"),
        (replace(TERMS, service_groups=frozenset({"parks"})), CENTER, CONTACT, NOW, "skill"),
        (TERMS, replace(CENTER, languages=frozenset({"en"})), CONTACT, NOW, "language"),
        (replace(TERMS, languages=frozenset({"en"})), CENTER, CONTACT, NOW, "language"),
        # 01:00 in New York, outside 08:00-20:00 local, although 06:00 UTC.
        (TERMS, CENTER, CONTACT, datetime(2026, 3, 11, 6, 0, tzinfo=UTC), "hours"),
        # Saturday.
        (TERMS, CENTER, CONTACT, datetime(2026, 3, 14, 15, 0, tzinfo=UTC), "hours"),
        (
            replace(TERMS, hours=Hours.from_weekly({"wednesday": [(12 * 60, 13 * 60)]})),
            CENTER,
            CONTACT,
            NOW,
            "hours",
        ),
        (TERMS, replace(CENTER, open_by_tenant={"springfield": 10}), CONTACT, NOW, "share_cap"),
        (TERMS, replace(CENTER, state=CenterState.OVERLOADED), CONTACT, NOW, "state_overloaded"),
        (TERMS, replace(CENTER, state=CenterState.FULL), CONTACT, NOW, "state_full"),
        (TERMS, replace(CENTER, state=CenterState.UNREACHABLE), CONTACT, NOW, "state_unreachable"),
        (
            replace(TERMS, valid_until=datetime(2026, 3, 1, tzinfo=UTC)),
            CENTER,
            CONTACT,
            NOW,
            "agreement_expired",
        ),
        (
            replace(TERMS, valid_from=datetime(2026, 4, 1, tzinfo=UTC)),
            CENTER,
            CONTACT,
            NOW,
            "agreement_not_started",
        ),
        (replace(TERMS, active=False), CENTER, CONTACT, NOW, "agreement_inactive"),
        (replace(TERMS, channels=frozenset({"chat"})), CENTER, CONTACT, NOW, "channel"),
        (replace(TERMS, tenant_id="shelbyville"), CENTER, CONTACT, NOW, "no_agreement"),
    ],
    ids=[
        "center-skill",
        "agreement-groups",
        "center-language",
        "agreement-language",
        "night-local",
        "weekend",
        "agreement-hours",
        "share-cap",
        "overloaded",
        "full",
        "unreachable",
        "expired",
        "not-started",
        "inactive",
        "channel",
        "other-tenant",
    ],
)
def test_exclusions(terms, center, contact, now, reason):
    assert exclusion_reason(terms, center, contact, now) == reason


def test_language_matched_in_any_case():
    center = replace(CENTER, languages=frozenset({"EN", "ES"}))
    terms = replace(TERMS, languages=frozenset({"Es"}))
    for language in ("es", "ES-us", "es-MX"):
        contact = replace(CONTACT, language=language)
        assert exclusion_reason(terms, center, contact, NOW) is None, language
    french = replace(CONTACT, language="FR")
    assert exclusion_reason(terms, center, french, NOW) == "language"


def test_standby_center_takes_overflow():
    assert exclusion_reason(TERMS, replace(CENTER, state=CenterState.STANDBY), CONTACT, NOW) is None


def test_share_cap_just_under_limit():
    center = replace(CENTER, open_by_tenant={"springfield": 9, "shelbyville": 50})
    assert exclusion_reason(TERMS, center, CONTACT, NOW) is None


def test_overnight_hours():
    # Monday night shift, 22:00 to 06:00.
    hours = Hours.from_weekly({"monday": [(22 * 60, 1440)], "tuesday": [(0, 6 * 60)]})
    assert hours.is_open(datetime(2026, 3, 9, 23, 0)) is True  # Monday 23:00
    assert hours.is_open(datetime(2026, 3, 10, 5, 0)) is True  # Tuesday 05:00
    assert hours.is_open(datetime(2026, 3, 10, 23, 0)) is False  # Tuesday 23:00
    assert hours.is_open(datetime(2026, 3, 9, 5, 0)) is False  # Monday 05:00


def test_ranking_by_wait_after_cost_weight():
    centers = {
        "partner-a": CENTER,
        "partner-b": replace(CENTER, id="partner-b", expected_wait=10.0),
        "partner-c": replace(CENTER, id="partner-c", expected_wait=0.0),
    }
    agreements = [
        TERMS,
        replace(TERMS, id="ag-2", center_id="partner-b", cost_weight=2.0),
        replace(TERMS, id="ag-3", center_id="partner-c", cost_weight=1.0),
        replace(TERMS, id="ag-4", center_id="partner-z"),
    ]
    ranked, excluded = eligible_partners(CONTACT, agreements, centers, NOW)
    # Scores: a (15+1)*1 = 16, b (10+1)*2 = 22, c (0+1)*1 = 1.
    assert [c.center.id for c in ranked] == ["partner-c", "partner-a", "partner-b"]
    assert excluded == {"partner-z": "center_unknown"}


def test_decide_stays_home_without_overflow():
    decision = decide(
        CONTACT,
        home_center_id="home",
        overflow_on=False,
        disaster=False,
        agreements=[TERMS],
        centers={"partner-a": CENTER},
        now=NOW,
    )
    assert decision.target == HOME
    assert decision.center_id == "home"


def test_decide_routes_to_partner_during_overflow():
    decision = decide(
        CONTACT,
        home_center_id="home",
        overflow_on=True,
        disaster=False,
        agreements=[TERMS],
        centers={"partner-a": CENTER},
        now=NOW,
    )
    assert decision.target == PARTNER
    assert decision.center_id == "partner-a"
    assert decision.agreement_id == "ag-1"
    assert decision.reason == "overflow"


def test_decide_home_when_no_partner_eligible():
    decision = decide(
        CONTACT,
        home_center_id="home",
        overflow_on=False,
        disaster=True,
        agreements=[TERMS],
        centers={"partner-a": replace(CENTER, state=CenterState.FULL)},
        now=NOW,
    )
    assert decision.target == HOME
    assert decision.reason == "disaster_no_partner"
    assert decision.excluded == {"partner-a": "state_full"}


def test_unknown_weekday_rejected():
    with pytest.raises(ValueError, match="unknown weekday 'funday'"):
        Hours.from_weekly({"funday": [(0, 60)]})
