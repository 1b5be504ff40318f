"""Short load runs of every scenario against the stack on PostgreSQL and RabbitMQ.

Each run starts `hub serve` and `hub worker` on loopback through `hub loadtest`, is bounded to
20 seconds of load with the CI criteria, and must pass. The harness must fail a run with
unmeetable criteria and a run whose records contain an acknowledged request that is not stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.harness import LOADTEST_DIR

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]

DURATION = "20"
USERS = "3"


def hub_loadtest(args: list[str], pg_url: str, rabbitmq_url: str, cwd: Path) -> tuple[int, dict]:
    env = os.environ.copy()
    env["HUB_DATABASE_URL"] = pg_url
    env["HUB_BROKER_URL"] = rabbitmq_url
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "loadtest", *args, "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"hub loadtest printed no JSON report: {result.stderr[-2000:]}")
    return result.returncode, report


def failed_checks(report: dict) -> list[dict]:
    return [check for check in report["checks"] if not check["passed"]]


@pytest.fixture(scope="module")
def daily_run(pg_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    report_dir = tmp_path_factory.mktemp("daily")
    args = ["daily", "--duration", DURATION, "--users", USERS, "--report", str(report_dir)]
    status, report = hub_loadtest(args, pg_url, rabbitmq_url, report_dir)
    return {"status": status, "report": report, "dir": report_dir}


def test_daily_run_passes(daily_run: dict) -> None:
    report = daily_run["report"]

    assert failed_checks(report) == []
    assert daily_run["status"] == 0
    assert report["stack"].startswith("PostgreSQL and RabbitMQ")
    assert report["reconciliation"]["acknowledged"] > 0
    assert report["reconciliation"]["lost"] == 0


def test_daily_run_writes_report(daily_run: dict) -> None:
    directory: Path = daily_run["dir"]

    assert (directory / "report.md").is_file()
    assert (directory / "report.json").is_file()
    assert (directory / "throughput.png").stat().st_size > 0
    assert (directory / "latency_p95.png").stat().st_size > 0


def test_daily_percentiles_within_max(daily_run: dict) -> None:
    for endpoint in daily_run["report"]["endpoints"]:
        assert endpoint["p95_ms"] <= endpoint["p99_ms"] <= endpoint["max_ms"], endpoint["name"]


def test_unmeetable_criteria_exit_nonzero(daily_run: dict, pg_url: str, rabbitmq_url: str) -> None:
    directory: Path = daily_run["dir"]
    criteria = LOADTEST_DIR / "criteria" / "unmeetable.yaml"
    args = ["daily", "--recheck", "--report", str(directory), "--criteria", str(criteria)]

    status, report = hub_loadtest(args, pg_url, rabbitmq_url, directory)

    assert status == 1
    assert report["passed"] is False
    assert "requests per second >=" in [c["criterion"] for c in failed_checks(report)]


def test_planted_lost_request_exits_nonzero(
    daily_run: dict, pg_url: str, rabbitmq_url: str
) -> None:
    directory: Path = daily_run["dir"]
    acks = [
        line
        for path in (directory / "records").glob("acks-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    tenant_id = json.loads(acks[0])["tenant_id"] if acks else "new-york-city"
    planted = {"tenant_id": tenant_id, "service_request_id": "PLANTED0LOST", "token": None}
    (directory / "records" / "acks-planted.jsonl").write_text(json.dumps(planted) + "\n")
    args = ["daily", "--recheck", "--report", str(directory)]

    status, report = hub_loadtest(args, pg_url, rabbitmq_url, directory)

    assert status == 1
    assert report["reconciliation"]["lost"] == 1
    assert report["reconciliation"]["lost_examples"] == [f"{tenant_id}/PLANTED0LOST"]


@pytest.mark.parametrize("scenario", ["surge", "alert-storm", "overflow"])
def test_scenario_run_passes(scenario: str, pg_url: str, rabbitmq_url: str, tmp_path: Path) -> None:
    args = [scenario, "--duration", DURATION, "--users", USERS, "--report", str(tmp_path)]

    status, report = hub_loadtest(args, pg_url, rabbitmq_url, tmp_path)

    assert failed_checks(report) == []
    assert status == 0
    assert report["reconciliation"]["lost"] == 0
