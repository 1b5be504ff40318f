"""`hub loadtest`: run a Locust scenario headless against the hub, reconcile, check, report.

Steps: start a loopback stack unless `--target` names one; onboard the example tenants and
create keys; write the run configuration; run Locust as a subprocess bounded by the duration;
read the raw samples and acknowledgements; check that every acknowledged request is stored;
compare the figures with the criteria file; write the report. The exit status is 0 when every
criterion passes and 1 otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.analysis import (
    ALL_ENDPOINTS,
    check_criteria,
    endpoint_figures,
    load_criteria,
    read_acks,
    read_samples,
    reconcile,
    reconcile_alerts,
)
from loadtests.profiles import PROFILE_DIR, load_profile
from loadtests.report import NYC_RECORD_DAY_RATE, write_charts, write_report
from loadtests.stack import Stack, onboard, start_stack

LOADTEST_DIR = Path(__file__).resolve().parent
SCENARIOS = {
    "daily": "daily.py",
    "surge": "surge.py",
    "alert-storm": "alert_storm.py",
    "overflow": "overflow.py",
}
DEFAULT_CRITERIA = LOADTEST_DIR / "criteria" / "ci.yaml"
# Example tenant id to the profile derived from that city's records.
TENANT_PROFILES = {"new-york-city": "nyc", "san-francisco": "sf", "boston": "boston"}
POINTS_PER_TENANT = 200


@dataclass
class RunOptions:
    scenario: str
    target: str | None
    users: int
    duration: int
    criteria: Path
    report_dir: Path
    profile: Path | None = None
    recheck: bool = False
    command: str = ""


def example_manifests() -> list[Path]:
    from tenants.manifest import example_paths

    return example_paths()


def tenant_entry(manifest_path: Path, api_key: str, profile: Path | None) -> dict[str, Any]:
    """Describe one tenant for the load users: ids, key, catalog and points inside its area."""
    from tenants.manifest import load_manifest

    manifest = load_manifest(manifest_path)
    area = manifest.service_area
    min_lon, min_lat, max_lon, max_lat = area.bounds()
    rng = random.Random(manifest.id)
    points: list[list[float]] = []
    for _ in range(POINTS_PER_TENANT * 50):
        lat, lon = rng.uniform(min_lat, max_lat), rng.uniform(min_lon, max_lon)
        if area.contains(lon, lat):
            points.append([lat, lon])
        if len(points) >= POINTS_PER_TENANT:
            break
    profile_path = profile or PROFILE_DIR / f"{TENANT_PROFILES.get(manifest.id, 'nyc')}.yaml"
    return {
        "tenant_id": manifest.id,
        "jurisdiction_id": manifest.jurisdiction_id,
        "api_key": api_key,
        "service_codes": [service.code for service in manifest.services],
        "points": points,
        "profile": load_profile(profile_path),
    }


def prepare_config(options: RunOptions, env: dict[str, str], record_dir: Path) -> Path:
    tenants = []
    for path in example_manifests():
        from tenants.manifest import load_manifest

        tenant_id = load_manifest(path).id
        key = onboard(path, tenant_id, env, ["open311"])
        tenants.append(tenant_entry(path, key, options.profile))
    config: dict[str, Any] = {"tenants": tenants, "record_dir": str(record_dir)}
    first = tenants[0]["tenant_id"]
    if options.scenario == "alert-storm":
        manager = onboard(example_manifests()[0], first, env, ["emergency_manager"])
        approver = onboard(example_manifests()[0], first, env, ["emergency_manager"])
        config["alert"] = {
            "manager_key": manager,
            "approver_key": approver,
            "subscribers": max(options.users * 50, 100),
            "sink_url": "http://127.0.0.1:9/sink",
            "body": {"status": "Test", "msgType": "Alert", "scope": "Public"},
        }
    if options.scenario == "overflow":
        config["overflow"] = {
            "agent_key": onboard(example_manifests()[0], first, env, ["agent"]),
            "degrade": None,
        }
    path = options.report_dir / "run-config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    os.chmod(path, 0o600)  # it contains API keys
    return path


def run_locust(options: RunOptions, url: str, config_path: Path) -> int:
    env = os.environ.copy()
    env["HUB_LOADTEST_CONFIG"] = str(config_path)
    env["HUB_LOADTEST_DURATION"] = str(options.duration)
    env["HUB_LOADTEST_USERS"] = str(options.users)
    scenario_file = LOADTEST_DIR / "scenarios" / SCENARIOS[options.scenario]
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(scenario_file),
        "--headless",
        "--host",
        url,
        "--users",
        str(options.users),
        "--spawn-rate",
        str(max(options.users, 1)),
        "--run-time",
        f"{options.duration}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(options.report_dir / "locust"),
        "--html",
        str(options.report_dir / "locust.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    log_path = options.report_dir / "locust.log"
    with log_path.open("wb") as log_file:
        try:
            result = subprocess.run(
                command,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=options.duration + 120,
            )
        except subprocess.TimeoutExpired:
            return 124
    return result.returncode


def database_engine(stack: Stack | None) -> Any:
    from hub.core.db import get_engine
    from hub.core.settings import Settings

    if stack is not None:
        settings = Settings(var_dir=Path(stack.env["HUB_VAR_DIR"]))
    else:
        var_dir = os.environ.get("HUB_VAR_DIR")
        settings = Settings(var_dir=Path(var_dir)) if var_dir else Settings()
    return get_engine(settings.effective_database_url, settings)


def run(options: RunOptions) -> dict[str, Any]:
    """Run the scenario (or recheck an earlier run) and write the report; return it."""
    options.report_dir.mkdir(parents=True, exist_ok=True)
    record_dir = options.report_dir / "records"
    criteria = load_criteria(options.criteria)
    stack: Stack | None = None
    started = datetime.now(UTC)
    locust_status = 0

    if not options.recheck:
        shutil.rmtree(record_dir, ignore_errors=True)
        if options.target is None:
            stack = start_stack(options.report_dir)
        try:
            env = stack.env if stack else os.environ.copy()
            url = stack.url if stack else str(options.target)
            config_path = prepare_config(options, env, record_dir)
            locust_status = run_locust(options, url, config_path)
        finally:
            if stack is not None:
                stack.stop()
    if options.recheck and options.target is None:
        os.environ.setdefault("HUB_VAR_DIR", str(options.report_dir / "var"))

    samples = read_samples(record_dir)
    figures = endpoint_figures(samples)
    acks = read_acks(record_dir)
    engine = database_engine(stack)
    reconciliation = reconcile(acks, engine)
    reconcile_alerts(acks, engine, reconciliation)
    checks = check_criteria(criteria, figures, reconciliation)
    overall = next(f for f in figures if f.name == ALL_ENDPOINTS)
    charts = write_charts(samples, options.report_dir)

    report = {
        "scenario": options.scenario,
        "target": options.target or (stack.url if stack else "the stack of the earlier run"),
        "stack": _stack_label(stack, options),
        "users": options.users,
        "duration_seconds": options.duration,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "command": options.command,
        "locust_exit_status": locust_status,
        "requests_per_second": overall.requests_per_second,
        "nyc_record_day_multiple": round(overall.requests_per_second / NYC_RECORD_DAY_RATE, 2),
        "endpoints": [asdict(f) for f in figures],
        "reconciliation": asdict(reconciliation),
        "checks": [asdict(c) for c in checks],
        "charts": charts,
        "passed": all(c.passed for c in checks) and overall.requests > 0,
    }
    write_report(report, options.report_dir)
    return report


def _stack_label(stack: Stack | None, options: RunOptions) -> str:
    if stack is None:
        return "external target" if options.target else "recheck"
    if stack.distributed:
        return "PostgreSQL and RabbitMQ, 2 API processes, 1 worker"
    return "embedded default (SQLite, embedded broker)"
