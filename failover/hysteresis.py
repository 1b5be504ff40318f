"""Surge detection with hysteresis on a center's expected wait.

Overflow switches on only after the expected wait has stayed above `high_seconds` for
`hold_on_seconds` without a break, and switches off only after it has stayed below
`low_seconds` for `hold_off_seconds`. Values between the two thresholds reset both timers, so a
curve that oscillates around either threshold never flaps. A detector holds no clock of its own:
callers pass the observation time, which keeps it pure and replayable in the simulation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """Per-tenant surge thresholds, in seconds of expected wait and of hold time."""

    high_seconds: float = 90.0
    low_seconds: float = 30.0
    hold_on_seconds: float = 120.0
    hold_off_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.low_seconds < 0 or self.hold_on_seconds < 0 or self.hold_off_seconds < 0:
            raise ValueError("thresholds and hold times must be zero or positive")
        if self.low_seconds >= self.high_seconds:
            raise ValueError(
                f"low threshold {self.low_seconds} s must be below the high threshold "
                f"{self.high_seconds} s; lower overflow.low_wait_seconds"
            )


@dataclass
class SurgeDetector:
    """The overflow switch of one center. `observe` returns True when the switch changed."""

    thresholds: Thresholds
    overflow_on: bool = False
    # Start of the current unbroken run above the high (or below the low) threshold.
    above_since: float | None = None
    below_since: float | None = None
    changed_at: float | None = None

    def observe(self, now: float, expected_wait: float) -> bool:
        """Feed one expected-wait sample taken at `now` (seconds, monotonic)."""
        t = self.thresholds
        if expected_wait > t.high_seconds:
            self.below_since = None
            if self.above_since is None:
                self.above_since = now
        elif expected_wait < t.low_seconds:
            self.above_since = None
            if self.below_since is None:
                self.below_since = now
        else:
            self.above_since = None
            self.below_since = None

        if not self.overflow_on and self.above_since is not None:
            if now - self.above_since >= t.hold_on_seconds:
                return self._switch(True, now)
        if self.overflow_on and self.below_since is not None:
            if now - self.below_since >= t.hold_off_seconds:
                return self._switch(False, now)
        return False

    def observe_outage(self) -> None:
        """Record that no sample exists because every own center is unreachable (disaster
        mode). Both timers restart and the switch keeps its state, so the hold times count
        only time in which the centers were reachable and measured."""
        self.above_since = None
        self.below_since = None

    def _switch(self, on: bool, now: float) -> bool:
        self.overflow_on = on
        self.changed_at = now
        self.above_since = None
        self.below_since = None
        return True
