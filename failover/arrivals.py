"""Arrival curves: contacts per minute, from a `minute,count` CSV or from request timestamps."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

MINUTES_PER_DAY = 1440


def load_curve_csv(path: Path) -> list[float]:
    """Read a `minute,count` CSV (header optional) into counts indexed by minute.

    Minutes missing from the file count as zero. Raises ValueError naming the line on bad input.
    """
    counts: dict[int, float] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            if line_no == 1 and not row[0].strip().lstrip("-").isdigit():
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{line_no}: expected `minute,count`, got {row!r}")
            try:
                minute = int(row[0])
                count = float(row[1])
            except ValueError:
                raise ValueError(
                    f"{path}:{line_no}: minute must be an integer and count a number, "
                    f"got {row[0]!r},{row[1]!r}"
                ) from None
            if minute < 0 or count < 0 or not math.isfinite(count):
                raise ValueError(f"{path}:{line_no}: minute and count must be >= 0")
            counts[minute] = counts.get(minute, 0.0) + count
    if not counts:
        raise ValueError(f"{path}: no `minute,count` rows found")
    curve = [0.0] * (max(counts) + 1)
    for minute, count in counts.items():
        curve[minute] = count
    return curve


def curve_from_timestamps(timestamps: Iterable[datetime]) -> list[float]:
    """Return the mean contacts per minute of the day over the days the timestamps cover."""
    curve = [0.0] * MINUTES_PER_DAY
    days: set[object] = set()
    for ts in timestamps:
        curve[ts.hour * 60 + ts.minute] += 1
        days.add(ts.date())
    if not days:
        raise ValueError("no timestamps to build an arrival curve from")
    return [c / len(days) for c in curve]


def smooth(curve: list[float], window: int = 15) -> list[float]:
    """Return a centered moving average, so a sparse sample becomes a usable daily shape."""
    if window <= 1:
        return list(curve)
    half = window // 2
    n = len(curve)
    out = []
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        out.append(sum(curve[lo:hi]) / (hi - lo))
    return out


def scale_to_total(curve: list[float], total: float) -> list[float]:
    """Return the curve scaled so its counts add up to `total`."""
    current = sum(curve)
    if current <= 0:
        raise ValueError("the arrival curve has no contacts to scale")
    factor = total / current
    return [c * factor for c in curve]


def write_curve_csv(curve: list[float], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["minute", "count"])
        for minute, count in enumerate(curve):
            writer.writerow([minute, round(count, 4)])
