"""`hub loadtest`: run a Locust scenario headless against the hub, reconcile, check, report.

Steps:

1. start a loopback stack unless `--target` names one;
2. refuse a database that holds tenants other than load-test ones (`loadtests.load_tenants`)
   unless `--allow-real-tenants` is given;
3. onboard the `loadtest-` copies of the example tenants, point their agencies at the harness's
   receiver, create keys and write the run configuration;
4. run Locust as a subprocess bounded by the duration, then revoke the run's keys;
5. read the raw samples and acknowledgements and check that each acknowledged item is stored;
6. compare the figures with the criteria file and write the report.

The exit status is 0 when every criterion passes and 1 otherwise.
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

import structlog

from hub.core.settings import reset_settings_cache
from loadtests import load_tenants
from loadtests.alert_setup import alert_config, wait_for_deliveries
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
from loadtests.stack import Stack, is_distributed, onboard, start_stack

log = structlog.get_logger(__name__)

LOADTEST_DIR = Path(__file__).resolve().parent
SCENARIOS = {
    "daily": "daily.py",
    "surge": "surge.py",
    "alert-storm": "alert_storm.py",
    "overflow": "overflow.py",
}
DEFAULT_CRITERIA = LOADTEST_DIR / "criteria" / "ci.yaml"


def default_criteria(scenario: str) -> Path:
    """Return `criteria/ci-SCENARIO.yaml` when a scenario has its own, else `criteria/ci.yaml`."""
    own = LOADTEST_DIR / "criteria" / f"ci-{scenario}.yaml"
    return own if own.is_file() else DEFAULT_CRITERIA


# Example tenant id (without the load-test prefix) to the profile derived from that city's
# records.
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
    allow_real_tenants: bool = False


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


def load_manifests() -> list[Any]:
    """Return the load-test copies of the example manifests."""
    return [load_tenants.load_manifest_for(path) for path in example_manifests()]


def tenant_entry(manifest: Any, api_key: str, profile: Path | None) -> dict[str, Any]:
    """Describe one tenant for the load users: ids, key, catalog and points inside its area."""
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
    city = TENANT_PROFILES.get(load_tenants.base_tenant_id(manifest.id), "nyc")
    profile_path = profile or PROFILE_DIR / f"{city}.yaml"
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
    """Rewrite the webhook URL of every agency of the load tenants to the loopback receiver."""
    from sqlalchemy import select

    from hub.core.db import unit_of_work
    from hub.core.tenancy import TenantContext
    from tenants.agencies import webhook_secrets
    from tenants.models import Agency

    for tenant_id in tenant_ids:
        if not load_tenants.is_load_tenant(tenant_id):
            raise ValueError(f"{tenant_id!r} is not a load-test tenant; its agencies stay as set")
        context = TenantContext(tenant_id=tenant_id, actor="cli:loadtest")
        with unit_of_work(context, engine=engine) as session:
            for agency in session.scalars(select(Agency)):
                agency.webhook_url = receiver.url_for(tenant_id, agency.code)
                path = receiver.path_for(tenant_id, agency.code)
                receiver.secrets[path] = webhook_secrets(session, agency).current or ""


def overflow_config(manifests: list[Any], engine: Any) -> dict[str, Any]:
    """Return, per tenant with contact centers, a staff key and the centers' traits."""
    result: dict[str, Any] = {}
    for manifest in manifests:
        centers = [
            {
                "id": center.id,
                "agents": center.agents,
                "skills": center.skills or ["general"],
                "languages": center.languages,
            }
            for center in manifest.overflow.centers
        ]
        if centers:
            key = onboard(manifest, engine, ["agent", "supervisor"], "load test")
            create_centers(engine, manifest.id)
            result[manifest.id] = {"key": key, "centers": centers}
    return result


def create_centers(engine: Any, tenant_id: str) -> None:
    """Create the tenant's contact centers before load starts, as a deployment has them.

    NOTE: without this step the first heartbeat and the first contact, served by different API
    processes, both insert the center, and one fails with a 500 (unique violation on
    `overflow_centers`). The scenario measures contacts, not that start-up race.
    """
    from failover.centers import sync_tenant_centers
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext
    from tenants.models import Tenant

    with unit_of_work(SystemContext("load test centers"), engine=engine) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is not None:
            sync_tenant_centers(session, tenant)


def prepare_config(
    options: RunOptions,
    engine: Any,
    record_dir: Path,
    alert_receiver: Any,
    agency_receiver: Any,
) -> Path:
    """Onboard the load-test tenants, create keys and write the run configuration file.

    Agency deliveries go to `agency_receiver`; `alert_receiver` takes the alert-storm
    subscribers' webhook deliveries.
    """
    manifests = load_manifests()
    tenants = [
        tenant_entry(manifest, onboard(manifest, engine, ["open311"], "load test"), options.profile)
        for manifest in manifests
    ]
    config: dict[str, Any] = {"tenants": tenants, "record_dir": str(record_dir)}
    point_agencies_at(agency_receiver, engine, [t["tenant_id"] for t in tenants])
    if options.scenario == "alert-storm":
        managers = [onboard(manifests[0], engine, ["emergency_manager"], "load test") for _ in "ab"]
        config["alert"] = alert_config(tenants[0], alert_receiver, options.users, managers)
    if options.scenario == "overflow":
        config["overflow"] = overflow_config(manifests, engine)
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
    if "HUB_VAR_DIR" in stack.env:
        os.environ["HUB_VAR_DIR"] = stack.env["HUB_VAR_DIR"]
        reset_settings_cache()


def database_engine() -> Any:
    from hub.core.db import get_engine

    return get_engine()


@dataclass
class LoadResult:
    """The target and stack of a run, and the receiver's counts.

    `agency_deliveries` is None for an external target, whose agencies keep their own webhooks;
    `alert_duplicates` counts alert deliveries the receiver got more than once.
    """

    locust_status: int
    target: str
    stack_label: str
    agency_deliveries: dict[str, int] | None
    alert_duplicates: int


def generate_load(options: RunOptions, record_dir: Path) -> LoadResult:
    """Start the stack unless there is a target, run Locust, and wait for alert fan-out.

    A target or a distributed stack uses the configured database, which is checked for real
    tenants before anything starts or changes.
    """
    from hub.cli.demo.receiver import AgencyReceiver

    if options.target is not None or is_distributed(dict(os.environ)):
        load_tenants.check_database(
            database_engine(), allow_real_tenants=options.allow_real_tenants
        )
    stack: Stack | None = None
    engine = None
    receiver = AgencyReceiver(port=0).start()
    agency_deliveries = None
    try:
        if options.target is None:
            stack = start_stack(options.report_dir)
            use_stack_settings(stack)
        url = stack.url if stack else str(options.target)
        engine = database_engine()
        config_path = prepare_config(options, engine, record_dir, receiver, receiver)
        status = run_locust(options, url, config_path)
        alert_ids = [str(a["alert_id"]) for a in read_acks(record_dir) if a.get("alert_id")]
        if alert_ids:
            wait_for_deliveries(engine, alert_ids)
    finally:
        if engine is not None:
            revoke_run_keys(engine)
        if stack is not None:
            stack.stop()
        receiver.stop()
    received = receiver.snapshot()
    alert_delivery_ids = {item.delivery_id for item in received if "/alerts-" in item.path}
    alert_duplicates = sum(
        count for key, count in receiver.duplicates.items() if key in alert_delivery_ids
    )
    if stack is not None:
        agency_deliveries = {
            "received": len(received) - len(alert_delivery_ids),
            "duplicates": sum(receiver.duplicates.values()) - alert_duplicates,
        }
    return LoadResult(status, url, _stack_label(stack), agency_deliveries, alert_duplicates)


def revoke_run_keys(engine: Any) -> None:
    """Revoke the keys of the load tenants, so none outlives the run that printed it."""
    tenant_ids = [manifest.id for manifest in load_manifests()]
    revoked = load_tenants.revoke_keys(engine, tenant_ids)
    log.info("loadtest_keys_revoked", keys=revoked, tenants=tenant_ids)


def run(options: RunOptions) -> dict[str, Any]:
    """Run the scenario (or recheck an earlier run) and write the report; return it."""
    options.report_dir.mkdir(parents=True, exist_ok=True)
    record_dir = options.report_dir / "records"
    criteria = load_criteria(options.criteria)
    started = datetime.now(UTC)
    load = LoadResult(0, options.target or "the stack of the earlier run", "recheck", None, 0)

    if not options.recheck:
        shutil.rmtree(record_dir, ignore_errors=True)
        load = generate_load(options, record_dir)
    elif options.target is None and not is_distributed(dict(os.environ)):
        # An earlier run started its own embedded stack, whose database is in the report.
        os.environ.setdefault("HUB_VAR_DIR", str(options.report_dir / "var"))
        reset_settings_cache()

    samples = read_samples(record_dir)
    figures = endpoint_figures(samples)
    acks = read_acks(record_dir)
    engine = database_engine()
    reconciliation = reconcile(acks, engine)
    reconcile_alerts(acks, engine, reconciliation)
    reconciliation.deliveries_duplicated += load.alert_duplicates
    checks = check_criteria(criteria, figures, reconciliation)
    overall = next(f for f in figures if f.name == ALL_ENDPOINTS)
    charts = write_charts(samples, options.report_dir)

    report = {
        "scenario": options.scenario,
        "target": load.target,
        "stack": load.stack_label,
        "users": options.users,
        "duration_seconds": options.duration,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "command": options.command,
        "locust_exit_status": load.locust_status,
        "requests_per_second": overall.requests_per_second,
        "nyc_record_day_multiple": round(overall.requests_per_second / NYC_RECORD_DAY_RATE, 2),
        "endpoints": [asdict(f) for f in figures],
        "reconciliation": asdict(reconciliation),
        "agency_deliveries": load.agency_deliveries,
        "checks": [asdict(c) for c in checks],
        "charts": charts,
        "passed": all(c.passed for c in checks) and overall.requests > 0,
    }
    write_report(report, options.report_dir)
    return report


def _stack_label(stack: Stack | None) -> str:
    if stack is None:
        return "external target"
    if stack.distributed:
        return "PostgreSQL and RabbitMQ, 2 API processes, 1 worker"
    return "embedded default (SQLite, embedded broker)"
