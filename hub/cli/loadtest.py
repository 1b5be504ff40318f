"""`hub loadtest`: capacity runs with a pass or fail report (logic in loadtests.harness)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

import typer

from hub.cli.output import JSON_OPTION, emit, err_console, fail, require_file, table
from hub.core.logging import configure_logging
from hub.core.settings import get_settings

# Host names a load run may target. The host is compared after parsing, so a URL such as
# http://127.0.0.1.example.com or http://localhost@other.host is not taken for loopback.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback_url(url: str) -> bool:
    """Return True for an http URL whose host is loopback, with no user info and a valid port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "http" or parts.username is not None or parts.password is not None:
        return False
    return parts.hostname in LOOPBACK_HOSTS and (port is None or 1 <= port <= 65535)


def loadtest(
    scenario: str = typer.Argument(..., help="Scenario: daily, surge, alert-storm or overflow."),
    target: str = typer.Option(
        None, "--target", help="Base URL of a running hub on loopback; default: start one."
    ),
    users: int = typer.Option(4, "--users", min=1, max=500, help="Simulated users (baseline)."),
    duration: int = typer.Option(
        60, "--duration", min=5, max=3600, help="Run time in seconds; the surge stages scale."
    ),
    criteria: Path = typer.Option(
        None,
        "--criteria",
        help="Capacity criteria YAML; default: loadtests/criteria/ci-SCENARIO.yaml or ci.yaml.",
    ),
    report: Path = typer.Option(
        Path("var/loadtest"), "--report", help="Directory for the report, charts and records."
    ),
    profile: Path = typer.Option(
        None, "--profile", help="Load profile YAML for every tenant instead of the stored ones."
    ),
    recheck: bool = typer.Option(
        False,
        "--recheck",
        help="Reconcile and check the records in --report again without generating load.",
    ),
    allow_real_tenants: bool = typer.Option(
        False,
        "--allow-real-tenants",
        help=(
            "Run even though the database contains tenants other than the run's own loadtest-"
            " tenants (a production database): the run adds its tenants, keys and requests"
            " there. Without it such a database is rejected."
        ),
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a Locust scenario headless, reconcile with the database, check the criteria.

    The run onboards its own `loadtest-` copies of the example tenants and revokes their keys
    at the end; it never changes other tenants.
    """
    from loadtests.harness import SCENARIOS, RunOptions, default_criteria, run

    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; use one of: {', '.join(SCENARIOS)}")
    if target and not is_loopback_url(target):
        fail(
            f"--target {target!r} is not a loopback URL; load runs target "
            "http://127.0.0.1:PORT, http://[::1]:PORT or http://localhost:PORT only"
        )
    criteria = criteria or default_criteria(scenario)
    for label, path in (("--criteria", criteria), ("--profile", profile)):
        if path is not None:
            require_file(path, label=f"{label} file")

    options = RunOptions(
        scenario=scenario,
        target=target,
        users=users,
        duration=duration,
        criteria=criteria,
        report_dir=report,
        profile=profile,
        recheck=recheck,
        command=shlex.join(["hub", *sys.argv[1:]]),
        allow_real_tenants=allow_real_tenants,
    )
    configure_logging(get_settings())
    err_console.print(f"running {scenario} for {duration} s with {users} users", highlight=False)
    try:
        result = run(options)
    except (RuntimeError, ValueError) as exc:
        fail(str(exc))

    def render(data: dict) -> None:
        rows = [
            (
                f["name"],
                f["requests"],
                f["failures"],
                f["requests_per_second"],
                f["p95_ms"],
                f["p99_ms"],
            )
            for f in data["endpoints"]
        ]
        table("Endpoints", ["endpoint", "requests", "failures", "req/s", "p95 ms", "p99 ms"], rows)
        checks = [
            (c["criterion"], c["limit"], c["measured"], "pass" if c["passed"] else "FAIL")
            for c in data["checks"]
        ]
        table("Criteria", ["criterion", "limit", "measured", "result"], checks)
        verdict = "PASS" if data["passed"] else "FAIL"
        print(f"{verdict}: report in {report / 'report.md'}")

    emit(result, as_json, render)
    if not result["passed"]:
        raise typer.Exit(1)
