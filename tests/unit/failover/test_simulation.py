import csv
from datetime import datetime

import pytest

from failover.arrivals import curve_from_timestamps, load_curve_csv, scale_to_total, smooth
from failover.erlang import agents_for_target
from failover.simulation import CenterSpec, SimulationConfig, arrival_times, compare, simulate

HANDLE = 240.0


def sf_curve(shared_data):
    """Per-minute arrival shape of San Francisco's 311 sample, scaled to 12,000 contacts a day."""
    path = shared_data / "311_records" / "sf" / "cases_sample_10000(no-geo).csv"
    with path.open(newline="", encoding="utf-8") as handle:
        opened = [
            datetime.strptime(row["Opened"], "%m/%d/%Y %I:%M:%S %p")
            for row in csv.DictReader(handle)
        ]
    return scale_to_total(smooth(curve_from_timestamps(opened), 31), 12_000)


def test_overflow_raises_service_level_at_4x_surge(shared_data):
    curve = sf_curve(shared_data)
    # Home staffed by Erlang C for the normal day's busiest minute at 80% in 30 s.
    peak_rate = max(curve) / 60
    home_agents = agents_for_target(peak_rate, HANDLE, 30, 0.8).agents
    config = SimulationConfig(
        home=CenterSpec("home", home_agents, HANDLE),
        partners=(
            CenterSpec("partner-a", home_agents * 2, HANDLE, own_utilization=0.4),
            CenterSpec("partner-b", home_agents * 2, HANDLE, own_utilization=0.4, cost_weight=1.5),
        ),
    )
    arrivals = arrival_times(curve, 4.0, seed=7)
    without, with_overflow = compare(config, arrivals)

    assert without.offered == with_overflow.offered
    assert with_overflow.service_level > without.service_level
    assert with_overflow.abandon_rate < without.abandon_rate
    assert sum(with_overflow.routed.values()) > 0
    assert sum(without.routed.values()) == 0
    assert len(with_overflow.overflow_switches) >= 1
    assert all(0 < u <= 1 for u in with_overflow.partner_utilization.values())


def test_normal_day_meets_target_without_overflow(shared_data):
    curve = sf_curve(shared_data)
    home_agents = agents_for_target(max(curve) / 60, HANDLE, 30, 0.8).agents
    config = SimulationConfig(home=CenterSpec("home", home_agents, HANDLE))
    result = simulate(config, arrival_times(curve, 1.0, seed=7), overflow=False)
    assert result.service_level >= 0.8
    assert result.answered + result.abandoned == result.offered


def test_same_seed_same_figures():
    curve = [2.0] * 120
    config = SimulationConfig(
        home=CenterSpec("home", 5, 120.0), partners=(CenterSpec("p", 5, 120.0),)
    )
    first = simulate(config, arrival_times(curve, 3.0, seed=1), overflow=True)
    second = simulate(config, arrival_times(curve, 3.0, seed=1), overflow=True)
    assert first.as_dict() == second.as_dict()


def test_curve_csv_round_trip_and_errors(tmp_path):
    path = tmp_path / "curve.csv"
    path.write_text("minute,count\n0,3\n2,5.5\n")
    assert load_curve_csv(path) == [3.0, 0.0, 5.5]
    bad = tmp_path / "bad.csv"
    bad.write_text("minute,count\n0,abc\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        load_curve_csv(bad)
