"""Discrete-event model of a home center and its partners, with and without overflow.

The model runs on SimPy's event loop, but contacts and agents are plain counters and queues:
each arrival, answer, completion and abandonment is one scheduled event with a callback, so no
generator process exists per agent or per contact. That keeps a day of 277,000 contacts within
the time budget of the planning command.

Assumptions, stated because they shape the figures: handle times and caller patience are
exponential; queues are first come, first served; a contact routed to a partner stays there
(in-progress work finishes where it is); partners also serve their own Poisson traffic.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import simpy

from failover.eligibility import AgreementTerms, CenterSnapshot, CenterState, ContactTraits
from failover.hysteresis import SurgeDetector, Thresholds
from failover.routing import PARTNER, decide

_TENANT = "home"
_GROUP = "general"
# Seconds between samples of the home center's expected wait for the surge detector.
SAMPLE_SECONDS = 10.0


@dataclass(frozen=True)
class CenterSpec:
    id: str
    agents: int
    handle_time: float = 240.0
    # Partners only: own traffic as a share of their capacity, cost weight and share cap.
    own_utilization: float = 0.0
    cost_weight: float = 1.0
    share_cap: float = 0.5


@dataclass(frozen=True)
class SimulationConfig:
    home: CenterSpec
    partners: tuple[CenterSpec, ...] = ()
    thresholds: Thresholds = Thresholds()
    target_seconds: float = 30.0
    patience_seconds: float = 180.0
    seed: int = 311


@dataclass
class CenterResult:
    id: str
    agents: int
    answered: int = 0
    abandoned: int = 0
    routed_in: int = 0
    busy_seconds: float = 0.0
    utilization: float = 0.0


@dataclass
class SimulationResult:
    overflow: bool
    offered: int = 0
    answered: int = 0
    answered_within_target: int = 0
    abandoned: int = 0
    longest_wait: float = 0.0
    routed: dict[str, int] = field(default_factory=dict)
    partner_utilization: dict[str, float] = field(default_factory=dict)
    overflow_switches: list[tuple[float, bool]] = field(default_factory=list)
    # Home contacts waiting at each sample, for the chart: (seconds, waiting).
    waiting_series: list[tuple[float, int]] = field(default_factory=list)
    horizon_seconds: float = 0.0

    @property
    def service_level(self) -> float:
        """Share of offered home contacts answered within the target; abandons count as missed."""
        return self.answered_within_target / self.offered if self.offered else 1.0

    @property
    def abandon_rate(self) -> float:
        return self.abandoned / self.offered if self.offered else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "overflow": self.overflow,
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "service_level": round(self.service_level, 4),
            "abandon_rate": round(self.abandon_rate, 4),
            "longest_wait_seconds": round(self.longest_wait, 1),
            "routed": dict(self.routed),
            "partner_utilization": {k: round(v, 4) for k, v in self.partner_utilization.items()},
            "overflow_switches": len(self.overflow_switches),
        }


class _Center:
    __slots__ = ("spec", "free", "queue", "waiting", "busy", "open_home", "result")

    def __init__(self, spec: CenterSpec) -> None:
        self.spec = spec
        self.free = spec.agents
        # Entries are contacts: [arrival_time, status, is_home], status 0 waiting, 1 done.
        self.queue: deque[list] = deque()
        self.waiting = 0
        self.busy = 0.0
        self.open_home = 0
        self.result = CenterResult(spec.id, spec.agents)

    def expected_wait(self) -> float:
        if self.spec.agents <= 0:
            return math.inf
        ahead = self.waiting - self.free + 1
        return max(0.0, ahead * self.spec.handle_time / self.spec.agents)


def arrival_times(curve: Sequence[float], surge: float, seed: int) -> list[float]:
    """Return sorted arrival times in seconds, each minute's count times `surge`.

    Arrivals are spread uniformly at random within their minute. A fractional count adds one
    more contact with that probability.
    """
    rng = random.Random(seed)
    times: list[float] = []
    for minute, count in enumerate(curve):
        expected = count * surge
        n = int(expected)
        if rng.random() < expected - n:
            n += 1
        base = minute * 60.0
        times.extend(sorted(base + rng.random() * 60.0 for _ in range(n)))
    return times


def simulate(
    config: SimulationConfig,
    arrivals: Sequence[float],
    *,
    overflow: bool,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Run the model on home `arrivals` (seconds, sorted) and return the figures."""
    env = simpy.Environment()
    rng = random.Random(config.seed)
    home = _Center(config.home)
    partners = {p.id: _Center(p) for p in config.partners}
    result = SimulationResult(overflow=overflow, offered=len(arrivals))
    detector = SurgeDetector(config.thresholds)
    target = config.target_seconds
    patience_rate = 1.0 / config.patience_seconds
    terms = [
        AgreementTerms(
            id=f"sim-{p.id}",
            tenant_id=_TENANT,
            center_id=p.id,
            share_cap=p.share_cap,
            cost_weight=p.cost_weight,
        )
        for p in config.partners
    ]
    traits = ContactTraits(_TENANT, "call", "en", _GROUP)
    started_at = datetime(2026, 1, 1, tzinfo=UTC)

    def start_service(center: _Center, contact: list) -> None:
        wait = env.now - contact[0]
        contact[1] = 1
        center.free -= 1
        if contact[2]:
            result.answered += 1
            if wait <= target:
                result.answered_within_target += 1
            if wait > result.longest_wait:
                result.longest_wait = wait
        center.result.answered += 1
        duration = rng.expovariate(1.0 / center.spec.handle_time)
        center.busy += duration
        done = env.timeout(duration)
        done.callbacks.append(lambda _e: finish(center, contact))

    def finish(center: _Center, contact: list) -> None:
        center.free += 1
        if contact[2]:
            center.open_home -= 1
        serve_next(center)

    def serve_next(center: _Center) -> None:
        while center.free > 0 and center.queue:
            contact = center.queue.popleft()
            if contact[1] != 0:
                continue  # abandoned while queued
            center.waiting -= 1
            start_service(center, contact)

    def abandon(center: _Center, contact: list) -> None:
        if contact[1] != 0:
            return
        contact[1] = 2
        center.waiting -= 1
        center.result.abandoned += 1
        if contact[2]:
            center.open_home -= 1
            result.abandoned += 1

    def offer(center: _Center, is_home: bool) -> None:
        contact = [env.now, 0, is_home]
        if is_home:
            center.open_home += 1
        if center.free > 0 and not center.queue:
            start_service(center, contact)
            return
        center.queue.append(contact)
        center.waiting += 1
        patience = env.timeout(rng.expovariate(patience_rate))
        patience.callbacks.append(lambda _e: abandon(center, contact))

    def snapshots() -> dict[str, CenterSnapshot]:
        return {
            c.spec.id: CenterSnapshot(
                id=c.spec.id,
                tenant_id=None,
                skills=frozenset({_GROUP}),
                languages=frozenset({"en"}),
                agents=c.spec.agents,
                state=CenterState.ACTIVE,
                expected_wait=c.expected_wait(),
                open_by_tenant={_TENANT: c.open_home},
            )
            for c in partners.values()
        }

    def home_arrivals():
        for index, at in enumerate(arrivals):
            if at > env.now:
                yield env.timeout(at - env.now)
            target_center = home
            if overflow and detector.overflow_on and partners:
                decision = decide(
                    traits,
                    home_center_id=home.spec.id,
                    overflow_on=True,
                    disaster=False,
                    agreements=terms,
                    centers=snapshots(),
                    now=started_at,
                )
                if decision.target == PARTNER and decision.center_id:
                    target_center = partners[decision.center_id]
                    target_center.result.routed_in += 1
                    result.routed[target_center.spec.id] = (
                        result.routed.get(target_center.spec.id, 0) + 1
                    )
            offer(target_center, True)
            if progress is not None and index % 10_000 == 0:
                progress(index)

    def own_arrivals(center: _Center, until: float):
        rate = center.spec.own_utilization * center.spec.agents / center.spec.handle_time
        if rate <= 0:
            return
        while True:
            yield env.timeout(rng.expovariate(rate))
            if env.now >= until:
                return
            offer(center, False)

    def sampler(until: float):
        while env.now < until:
            wait = home.expected_wait()
            if overflow and detector.observe(env.now, wait):
                result.overflow_switches.append((env.now, detector.overflow_on))
            result.waiting_series.append((env.now, home.waiting))
            yield env.timeout(SAMPLE_SECONDS)

    horizon = (arrivals[-1] if arrivals else 0.0) + 1.0
    env.process(home_arrivals())
    env.process(sampler(horizon))
    for center in partners.values():
        env.process(own_arrivals(center, horizon))
    env.run()

    result.horizon_seconds = max(env.now, horizon)
    for center in partners.values():
        capacity = center.spec.agents * result.horizon_seconds
        center.result.busy_seconds = center.busy
        center.result.utilization = min(1.0, center.busy / capacity) if capacity else 0.0
        result.partner_utilization[center.spec.id] = center.result.utilization
        result.routed.setdefault(center.spec.id, 0)
    if progress is not None:
        progress(len(arrivals))
    return result


def compare(
    config: SimulationConfig, arrivals: Sequence[float]
) -> tuple[SimulationResult, SimulationResult]:
    """Run the same arrivals without and with overflow."""
    return simulate(config, arrivals, overflow=False), simulate(config, arrivals, overflow=True)


def write_chart(
    without: SimulationResult, with_overflow: SimulationResult, path: str, title: str
) -> None:
    """Write a PNG of home contacts waiting over the day, with and without overflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for run, label in ((without, "without overflow"), (with_overflow, "with overflow")):
        hours = [t / 3600 for t, _ in run.waiting_series]
        ax.plot(hours, [w for _, w in run.waiting_series], label=label, linewidth=1)
    on_since = None
    for at, on in with_overflow.overflow_switches:
        if on:
            on_since = at
        elif on_since is not None:
            ax.axvspan(on_since / 3600, at / 3600, color="orange", alpha=0.15)
            on_since = None
    if on_since is not None:
        ax.axvspan(
            on_since / 3600, with_overflow.horizon_seconds / 3600, color="orange", alpha=0.15
        )
    ax.set_xlabel("hour of day")
    ax.set_ylabel("home contacts waiting")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
