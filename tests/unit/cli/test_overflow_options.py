"""`hub overflow staffing` and `simulate`: option checks that need no database, and the status
table's formatting."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hub.cli import overflow
from hub.cli.main import app
from hub.core.logging import configure_logging


@pytest.fixture
def hub_cli():
    # CliRunner replaces sys.stderr with a stream it closes afterwards, so logging is set up
    # before it runs.
    configure_logging(force=True)
    return lambda *args: CliRunner().invoke(app, list(args))


@pytest.fixture
def curve(tmp_path):
    path = tmp_path / "curve.csv"
    path.write_text("minute,count\n" + "".join(f"{m},2\n" for m in range(30)))
    return path


def simulate(hub_cli, curve, *extra: str):
    return hub_cli(
        "overflow", "simulate", "--arrivals", str(curve), "--agents", "2", *extra, "--json"
    )


def test_chart_in_missing_folder(hub_cli, curve, tmp_path):
    chart = tmp_path / "missing" / "surge.png"
    result = simulate(hub_cli, curve, "--chart", str(chart))

    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert str(chart) in error
    assert f"the folder {chart.parent} does not exist" in error
    assert isinstance(result.exception, SystemExit)


def test_chart_path_is_folder(hub_cli, curve, tmp_path):
    result = simulate(hub_cli, curve, "--chart", str(tmp_path))

    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert f"--chart {tmp_path} is a folder" in error
    assert str(tmp_path / "surge.png") in error
    assert list(tmp_path.glob("*.png")) == []


def test_chart_written_to_file(hub_cli, curve, tmp_path):
    chart = tmp_path / "surge.png"
    result = simulate(hub_cli, curve, "--chart", str(chart))

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["chart"] == str(chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_partner_without_agents_rejected(hub_cli, curve):
    result = simulate(hub_cli, curve, "--partner-agents", "10", "--partner-agents", "0")

    assert result.exit_code == 2
    assert "--partner-agents" in json.loads(result.stdout)["error"]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--arrival-rate", "-5", "--arrival-rate must be 0 or more contacts per hour, got -5"),
        ("--handle-time", "0", "--handle-time must be more than 0 seconds, got 0"),
        ("--within", "-1", "--within must be 0 or more seconds, got -1"),
        ("--target", "1", "less than 1 (both bounds excluded), got 1;"),
        ("--target", "0", "more than 0 and less than 1 (both bounds excluded), got 0;"),
    ],
)
def test_staffing_rejects_value_as_given(hub_cli, option, value, expected):
    options = {"--arrival-rate": "720", "--handle-time": "240", option: value}
    args = [part for pair in options.items() for part in pair]
    result = hub_cli("overflow", "staffing", *args, "--json")

    assert result.exit_code == 2
    assert expected in json.loads(result.stdout)["error"]


def test_status_table_shows_service_level_percent():
    assert overflow._percent(0.835) == "83.5%"
    assert overflow._percent(1.0) == "100.0%"
    assert overflow._percent(None) == ""
