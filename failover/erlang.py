"""Erlang C queueing formulas for contact-center staffing.

Traffic `A` in erlangs is arrival rate times average handle time. The Erlang B blocking
probability is computed with the recurrence B(0) = 1, B(n) = A*B(n-1) / (n + A*B(n-1)), which
stays within [0, 1] and never forms A**n or n!, so it is stable for traffic in the tens of
thousands of erlangs. Erlang C follows from B: C = B / (1 - (A/N) * (1 - B)) for N > A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Agents above the traffic that `agents_for_target` tries before it gives up. A target that
# needs more than this is not reachable by staffing, for example a 100% service level.
_MAX_EXTRA_AGENTS = 100_000


def _check(traffic: float, agents: int) -> None:
    if not math.isfinite(traffic) or traffic < 0:
        raise ValueError(f"traffic must be a finite number of erlangs >= 0, got {traffic}")
    if agents < 0:
        raise ValueError(f"agents must be >= 0, got {agents}")


def erlang_b(traffic: float, agents: int) -> float:
    """Return the probability that a contact finds all `agents` busy in a loss system."""
    _check(traffic, agents)
    blocking = 1.0
    for n in range(1, agents + 1):
        blocking = traffic * blocking / (n + traffic * blocking)
    return blocking


def _erlang_c_from_b(traffic: float, agents: int, blocking: float) -> float:
    if agents <= traffic:
        return 1.0
    rho = traffic / agents
    return blocking / (1.0 - rho * (1.0 - blocking))


def erlang_c(traffic: float, agents: int) -> float:
    """Return the probability that a contact waits (1.0 when agents cannot keep up)."""
    return _erlang_c_from_b(traffic, agents, erlang_b(traffic, agents))


def _service_level(traffic: float, agents: int, wait_prob: float, aht: float, target: float):
    if agents <= traffic:
        return 0.0
    return max(0.0, 1.0 - wait_prob * math.exp(-(agents - traffic) * target / aht))


def service_level(
    arrival_rate: float, handle_time: float, agents: int, target_seconds: float
) -> float:
    """Return the share of contacts answered within `target_seconds`.

    `arrival_rate` is contacts per second and `handle_time` the average in seconds.
    """
    traffic = _traffic(arrival_rate, handle_time)
    wait_prob = erlang_c(traffic, agents)
    return _service_level(traffic, agents, wait_prob, handle_time, target_seconds)


def average_speed_of_answer(arrival_rate: float, handle_time: float, agents: int) -> float:
    """Return the mean wait in seconds over all contacts (infinite when agents <= traffic)."""
    traffic = _traffic(arrival_rate, handle_time)
    if agents <= traffic:
        return math.inf
    return erlang_c(traffic, agents) * handle_time / (agents - traffic)


def _traffic(arrival_rate: float, handle_time: float) -> float:
    if not math.isfinite(arrival_rate) or arrival_rate < 0:
        raise ValueError(f"arrival rate must be >= 0 contacts per second, got {arrival_rate}")
    if not math.isfinite(handle_time) or handle_time <= 0:
        raise ValueError(f"handle time must be > 0 seconds, got {handle_time}")
    return arrival_rate * handle_time


@dataclass(frozen=True)
class StaffingPlan:
    agents: int
    traffic_erlangs: float
    service_level: float
    wait_probability: float
    average_speed_of_answer: float
    occupancy: float


def agents_for_target(
    arrival_rate: float,
    handle_time: float,
    target_seconds: float,
    target_level: float,
) -> StaffingPlan:
    """Return the fewest agents whose service level reaches `target_level` (0 < level < 1).

    The Erlang B value is carried from one agent count to the next, so the search costs one
    recurrence step per agent instead of a full recomputation.
    """
    if not 0 < target_level < 1:
        raise ValueError(f"target service level must be between 0 and 1, got {target_level}")
    if target_seconds < 0:
        raise ValueError(f"target wait time must be >= 0 seconds, got {target_seconds}")
    traffic = _traffic(arrival_rate, handle_time)

    blocking = 1.0
    agents = 0
    limit = math.floor(traffic) + _MAX_EXTRA_AGENTS
    while agents < limit:
        agents += 1
        blocking = traffic * blocking / (agents + traffic * blocking)
        if agents <= traffic:
            continue
        wait_prob = _erlang_c_from_b(traffic, agents, blocking)
        level = _service_level(traffic, agents, wait_prob, handle_time, target_seconds)
        if level >= target_level:
            return StaffingPlan(
                agents=agents,
                traffic_erlangs=traffic,
                service_level=level,
                wait_probability=wait_prob,
                average_speed_of_answer=wait_prob * handle_time / (agents - traffic),
                occupancy=traffic / agents,
            )
    raise ValueError(
        f"no staffing up to {limit} agents reaches a service level of {target_level}; "
        "check the arrival rate and handle time"
    )
