import math
from fractions import Fraction

import pytest

from failover.erlang import (
    agents_for_target,
    average_speed_of_answer,
    erlang_b,
    erlang_c,
    service_level,
)


def test_erlang_b_small_case_by_hand():
    # A = 2 erlangs, N = 2: B = (A^2/2) / (1 + A + A^2/2) = 2 / 5.
    assert erlang_b(2.0, 2) == pytest.approx(0.4)


def test_erlang_c_small_case_by_hand():
    # A = 1, N = 2: C = (A^2/2 * N/(N-A)) / (1 + A + A^2/2 * N/(N-A)) = 1 / 3.
    assert erlang_c(1.0, 2) == pytest.approx(1 / 3)


def test_erlang_c_is_one_when_overloaded():
    assert erlang_c(10.0, 10) == 1.0
    assert service_level(1.0, 10.0, 10, 30) == 0.0
    assert math.isinf(average_speed_of_answer(1.0, 10.0, 10))


def _erlang_c_direct(traffic, agents):
    """The textbook closed form with exact fractions, as an independent reference."""
    a = Fraction(traffic)
    top = a**agents / math.factorial(agents) * Fraction(agents, agents - a)
    bottom = sum(a**k / math.factorial(k) for k in range(agents)) + top
    return float(top / bottom)


@pytest.mark.parametrize(("traffic", "agents"), [(1, 2), (5, 7), (48, 54), (48, 60), (100, 110)])
def test_erlang_c_matches_closed_form(traffic, agents):
    assert erlang_c(float(traffic), agents) == pytest.approx(_erlang_c_direct(traffic, agents))


def test_staffing_is_the_smallest_meeting_target():
    # 360 calls per 30 minutes at 240 s handle time is 48 erlangs.
    plan = agents_for_target(360 / 1800, 240, 20, 0.8)
    assert plan.traffic_erlangs == pytest.approx(48.0)
    assert plan.service_level >= 0.8
    assert service_level(360 / 1800, 240, plan.agents - 1, 20) < 0.8
    assert plan.agents == 54


def test_large_traffic_is_stable():
    # NYC's record day averaged 3.2 contacts/s; ten times that at 300 s is 9,600 erlangs.
    plan = agents_for_target(32.0, 300, 30, 0.8)
    assert math.isfinite(plan.service_level)
    assert 9_600 < plan.agents < 9_800
    assert 0 <= erlang_c(9_600.0, plan.agents) <= 1


def test_invalid_inputs_rejected():
    with pytest.raises(ValueError, match="handle time"):
        agents_for_target(1.0, 0, 30, 0.8)
    with pytest.raises(ValueError, match="between 0 and 1"):
        agents_for_target(1.0, 60, 30, 1.0)
    with pytest.raises(ValueError, match="arrival rate"):
        agents_for_target(-1.0, 60, 30, 0.8)
