"""Short load runs of every scenario against the stack on PostgreSQL and RabbitMQ.

One stack (`hub serve` with two API processes and a `hub worker`, on loopback) serves the whole
module, because each start imports the app in every process. Each scenario runs through
`hub loadtest --target` for 15 seconds with the CI criteria and must pass. The harness must
also fail a run with unmeetable criteria and a run whose records hold an acknowledged request
that is not stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.harness import LOADTEST_DIR
from loadtests.stack import Stack, start_stack

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]

DURATION = "15"
USERS = "3"


@pytest.fixture(scope="module")
def stack(
    pg_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    base = os.environ.copy()
    base["HUB_DATABASE_URL"] = pg_url
    base["HUB_BROKER_URL"] = rabbitmq_url
    started = start_stack(tmp_path_factory.mktemp("stack"), base_env=base)
    yield started
    started.stop()


def hub_loadtest(stack: Stack, args: list[str], report_dir: Path) -> tuple[int, dict]:
    env = dict(stack.env)
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    command = [sys.executable, "-m", "hub.cli.main", "loadtest", *args]
    command += ["--target", stack.url, "--report", str(report_dir), "--json"]
    # The session's database also contains the tenants of other tests.
    command.append("--allow-real-tenants")
    result = subprocess.run(
        command, env=env, cwd=report_dir, capture_output=True, text=True, timeout=180
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"hub loadtest printed no JSON report: {result.stderr[-2000:]}")
    return result.returncode, report


def failed_checks(report: dict) -> list[dict]:
    return [check for check in report["checks"] if not check["passed"]]


@pytest.fixture(scope="module")
def daily_run(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    report_dir = tmp_path_factory.mktemp("daily")
    status, report = hub_loadtest(
        stack, ["daily", "--duration", DURATION, "--users", USERS], report_dir
    )
    return {"status": status, "report": report, "dir": report_dir}


def test_daily_run_passes(daily_run: dict) -> None:
    report = daily_run["report"]

    assert failed_checks(report) == []
    assert daily_run["status"] == 0
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


def test_unmeetable_criteria_exit_nonzero(daily_run: dict, stack: Stack) -> None:
    criteria = LOADTEST_DIR / "criteria" / "unmeetable.yaml"
    args = ["daily", "--recheck", "--criteria", str(criteria)]

    status, report = hub_loadtest(stack, args, daily_run["dir"])

    assert status == 1
    assert report["passed"] is False
    assert "requests per second >=" in [c["criterion"] for c in failed_checks(report)]


def test_planted_lost_request_exits_nonzero(daily_run: dict, stack: Stack) -> None:
    records = daily_run["dir"] / "records"
    acks = [line for path in records.glob("acks-*.jsonl") for line in path.read_text().splitlines()]
    tenant_id = json.loads(acks[0])["tenant_id"] if acks else "new-york-city"
    planted = {"tenant_id": tenant_id, "service_request_id": "PLANTED0LOST", "token": None}
    (records / "acks-planted.jsonl").write_text(json.dumps(planted) + "\n")

    status, report = hub_loadtest(stack, ["daily", "--recheck"], daily_run["dir"])

    assert status == 1
    assert report["reconciliation"]["lost"] == 1
    assert report["reconciliation"]["lost_examples"] == [f"{tenant_id}/PLANTED0LOST"]


@pytest.mark.parametrize("scenario", ["surge", "alert-storm", "overflow"])
def test_scenario_run_passes(scenario: str, stack: Stack, tmp_path: Path) -> None:
    args = [scenario, "--duration", DURATION, "--users", USERS]

    status, report = hub_loadtest(stack, args, tmp_path)

    assert failed_checks(report) == []
    assert status == 0
    assert report["reconciliation"]["lost"] == 0
