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

from hub.core.settings import reset_settings_cache
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


def required_attributes(service: Any) -> dict[str, str]:
    """Return a valid form value for each required attribute of a service definition."""
    values: dict[str, str] = {}
    for attribute in service.attributes:
        if not (attribute.required and attribute.variable):
            continue
        if attribute.values:
            values[attribute.code] = attribute.values[0].key
        elif attribute.datatype == "number":
            values[attribute.code] = "1"
        elif attribute.datatype == "datetime":
            values[attribute.code] = datetime.now(UTC).isoformat(timespec="seconds")
        else:
            values[attribute.code] = "load test"
    return values


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
        "attributes": {service.code: required_attributes(service) for service in manifest.services},
        "points": points,
        "profile": load_profile(profile_path),
    }


def point_agencies_at(receiver: Any, engine: Any, tenant_ids: list[str]) -> None:
    """Rewrite every agency's webhook URL to the loopback receiver, as `hub demo` does."""
    from sqlalchemy import select

    from hub.core.db import unit_of_work
    from hub.core.tenancy import TenantContext
    from tenants.models import Agency

    for tenant_id in tenant_ids:
        context = TenantContext(tenant_id=tenant_id, actor="cli:loadtest")
        with unit_of_work(context, engine=engine) as session:
            for agency in session.scalars(select(Agency)):
                agency.webhook_url = receiver.url_for(tenant_id, agency.code)
                path = receiver.path_for(tenant_id, agency.code)
                receiver.secrets[path] = agency.webhook_secret or ""


def prepare_config(
    options: RunOptions, engine: Any, record_dir: Path, receiver: Any = None
) -> Path:
    """Onboard the example tenants, create keys and write the run configuration file.

    With a `receiver`, agency deliveries go to it instead of the manifests' webhook URLs.
    """
    manifests = example_manifests()
    tenants = [
        tenant_entry(path, onboard(path, engine, ["open311"], "load test"), options.profile)
        for path in manifests
    ]
    config: dict[str, Any] = {"tenants": tenants, "record_dir": str(record_dir)}
    if receiver is not None:
        point_agencies_at(receiver, engine, [tenant["tenant_id"] for tenant in tenants])
    if options.scenario == "alert-storm":
        managers = [onboard(manifests[0], engine, ["emergency_manager"], "load test") for _ in "ab"]
        config["alert"] = {
            "manager_key": managers[0],
            "approver_key": managers[1],
            "subscribers": max(options.users * 50, 100),
            "sink_url": "http://127.0.0.1:9/sink",
            "body": {"status": "Test", "msgType": "Alert", "scope": "Public"},
        }
    if options.scenario == "overflow":
        config["overflow"] = {
            "agent_key": onboard(manifests[0], engine, ["agent"], "load test"),
            "degrade": None,
        }
    path = options.report_dir / "run-config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    os.chmod(path, 0o600)  # the file contains API keys
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


def use_stack_settings(stack: Stack) -> None:
    """Point this process at the stack's var directory: its database and root key file."""
    os.environ["HUB_VAR_DIR"] = stack.env["HUB_VAR_DIR"]
    reset_settings_cache()


def database_engine() -> Any:
    from hub.core.db import get_engine

    return get_engine()


def run(options: RunOptions) -> dict[str, Any]:
    """Run the scenario (or recheck an earlier run) and write the report; return it."""
    options.report_dir.mkdir(parents=True, exist_ok=True)
    record_dir = options.report_dir / "records"
    criteria = load_criteria(options.criteria)
    stack: Stack | None = None
    started = datetime.now(UTC)
    locust_status = 0
    agency_deliveries: dict[str, int] | None = None

    if not options.recheck:
        shutil.rmtree(record_dir, ignore_errors=True)
        receiver = None
        if options.target is None:
            from hub.cli.demo.receiver import AgencyReceiver

            stack = start_stack(options.report_dir)
            use_stack_settings(stack)
            receiver = AgencyReceiver(port=0).start()
        try:
            url = stack.url if stack else str(options.target)
            config_path = prepare_config(options, database_engine(), record_dir, receiver)
            locust_status = run_locust(options, url, config_path)
        finally:
            if stack is not None:
                stack.stop()
            if receiver is not None:
                receiver.stop()
                agency_deliveries = {
                    "received": len(receiver.received),
                    "duplicates": sum(receiver.duplicates.values()),
                }
    elif options.target is None:
        # An earlier run started its own stack; its embedded database is in the report.
        os.environ.setdefault("HUB_VAR_DIR", str(options.report_dir / "var"))
        reset_settings_cache()

    samples = read_samples(record_dir)
    figures = endpoint_figures(samples)
    acks = read_acks(record_dir)
    engine = database_engine()
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
        "agency_deliveries": agency_deliveries,
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
