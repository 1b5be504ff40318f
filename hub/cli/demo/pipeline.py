"""The demo's core steps: tenants, agency receivers, API and worker, replay, routing summary."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from rich.progress import Progress
from sqlalchemy import select

from hub.cli.demo.context import DemoContext, DemoTenant
from hub.cli.demo.generate import generate_day
from hub.cli.demo.receiver import AgencyReceiver
from hub.cli.demo.replay import export_forms
from hub.cli.output import console, err_console, table
from hub.core.clock import as_utc, utcnow
from hub.core.db import unit_of_work
from hub.core.errors import ConfigurationError, InvalidInput
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.models import Delivery, ServiceRequest
from tenants.agencies import webhook_secrets
from tenants.manifest import example_paths, load_manifest
from tenants.models import Agency

log = structlog.get_logger(__name__)

# Concurrent Open311 POSTs while replaying, across all tenants.
REPLAY_CONCURRENCY = 8
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
# Seconds to wait for the API to return 200 on /healthz after it starts.
SERVER_START_SECONDS = 30.0


# The port `hub serve` uses by default, so the curl examples in the docs work against the demo.
DEMO_API_PORT = 8311


def free_port(host: str = "127.0.0.1", preferred: int = 0) -> int:
    """Return `preferred` when it is free on `host`, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError(f"no free TCP port on {host}")


def choose_api_port() -> int:
    """Return DEMO_API_PORT when it is free, else a free port, and print a notice when it differs.

    The docs' examples use port 8311, and without the notice a user who copies them would
    reach the other program on that port.
    """
    port = free_port(preferred=DEMO_API_PORT)
    if port != DEMO_API_PORT:
        err_console.print(
            f"[demo] port {DEMO_API_PORT} is in use by another program, so the demo API "
            f"listens on port {port}; use http://127.0.0.1:{port} in place of "
            f"http://127.0.0.1:{DEMO_API_PORT} in the docs' examples",
            highlight=False,
            markup=False,
        )
    return port


def onboard_tenants(ctx: DemoContext) -> dict[str, Any]:
    """Onboard every example manifest (again, if an earlier demo did) and create an API key."""
    from tenants.keys import create_api_key
    from tenants.onboarding import onboard

    for path in example_paths():
        manifest = load_manifest(path)
        with unit_of_work(SystemContext("demo onboarding"), engine=ctx.engine) as session:
            tenant, _first_key = onboard(session, manifest, actor="cli:demo")
            tenant_ctx = TenantContext(tenant_id=tenant.id, actor="cli:demo")
            # A fresh key per run, because a tenant onboarded by an earlier run shows no key.
            _row, api_key = create_api_key(session, tenant_ctx, roles=["open311"], label="hub demo")
            ctx.tenants.append(
                DemoTenant(
                    tenant_id=tenant.id,
                    jurisdiction_id=tenant.jurisdiction_id,
                    name=tenant.name,
                    api_key=api_key,
                    manifest_path=path,
                )
            )
    return {"onboarded": [tenant.tenant_id for tenant in ctx.tenants]}


def start_agency_receivers(ctx: DemoContext) -> dict[str, Any]:
    """Start one loopback receiver for every agency and point the agencies' webhooks at it.

    The example manifests name port 18311; when it is taken the receiver takes a free port, and
    either way the demo rewrites each agency's webhook URL to the receiver it started.
    """
    receiver = AgencyReceiver(port=18311)
    try:
        receiver.start()
    except OSError:
        receiver = AgencyReceiver(port=0).start()
    ctx.receivers = receiver
    ctx.add_cleanup(receiver.stop)

    count = 0
    for demo_tenant in ctx.tenants:
        tenant_ctx = TenantContext(tenant_id=demo_tenant.tenant_id, actor="cli:demo")
        with unit_of_work(tenant_ctx, engine=ctx.engine) as session:
            for agency in session.scalars(select(Agency)):
                url = receiver.url_for(demo_tenant.tenant_id, agency.code)
                agency.webhook_url = url
                receiver.secrets[receiver.path_for(demo_tenant.tenant_id, agency.code)] = (
                    webhook_secrets(session, agency).current or ""
                )
                ctx.receiver_urls[(demo_tenant.tenant_id, agency.code)] = url
                count += 1
    return {"receiver": f"http://{receiver.host}:{receiver.port}/agencies/", "agencies": count}


def start_server(ctx: DemoContext) -> dict[str, Any]:
    """Run the API in this process (uvicorn in a thread) and a `hub worker` child process."""
    import uvicorn

    from hub.api.app import create_app
    from hub.cli.serve import start_worker_process, stop_process

    port = choose_api_port()
    # The overflow step replays a surge on a simulated clock with its own board. A board on
    # the real clock in the API would evaluate the same switches at the same time and undo
    # the replay's hold times, so the API starts its board only when an overflow call needs it.
    app = create_app(ctx.settings, start_board=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    # The demo's own thread runs the server, so uvicorn must leave signal handling to the demo.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, name="demo-api", daemon=True)
    thread.start()

    def stop_server() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    ctx.add_cleanup(stop_server)
    ctx.base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while not _healthy(ctx.base_url):
        if time.monotonic() > deadline or not thread.is_alive():
            raise ConfigurationError(
                f"the demo API did not start on 127.0.0.1:{port} within "
                f"{SERVER_START_SECONDS:.0f} s; see the log above"
            )
        time.sleep(0.1)

    worker = ctx.worker = start_worker_process(concurrency=4, pool="threads")
    ctx.add_cleanup(lambda: stop_process(worker))
    return {"api": ctx.base_url, "worker_pid": worker.pid}


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def replay_requests(ctx: DemoContext) -> dict[str, Any]:
    """File each tenant's requests through `POST /open311/v2/requests.json` over HTTP.

    The tenant named by `--tenant` gets the rows of the `--replay` export; the others get a
    generated day.
    """
    options = ctx.options
    if options.replay_tenant is not None and options.replay_tenant not in {
        t.tenant_id for t in ctx.tenants
    }:
        known = ", ".join(t.tenant_id for t in ctx.tenants)
        raise InvalidInput(
            f"--tenant {options.replay_tenant} is not an example tenant; use one of {known}"
        )

    jobs: list[tuple[DemoTenant, list[tuple[str, str]]]] = []
    skipped: dict[str, dict[str, int]] = {}
    for demo_tenant in ctx.tenants:
        manifest = load_manifest(demo_tenant.manifest_path)
        if options.replay_file is not None and demo_tenant.tenant_id == options.replay_tenant:
            forms, reasons = export_forms(
                options.replay_file,
                options.replay_format or "",
                manifest,
                jurisdiction_id=demo_tenant.jurisdiction_id,
                api_key=demo_tenant.api_key,
                limit=options.requests_per_tenant,
                seed=options.seed,
            )
            skipped[demo_tenant.tenant_id] = dict(reasons)
        else:
            generated = generate_day(manifest, options.requests_per_tenant, options.seed)
            forms = [
                item.form(demo_tenant.jurisdiction_id, demo_tenant.api_key) for item in generated
            ]
        jobs.extend((demo_tenant, form) for form in forms)
    results = asyncio.run(_post_all(ctx.base_url, jobs))

    section: dict[str, Any] = {}
    for demo_tenant in ctx.tenants:
        outcomes = results.get(demo_tenant.tenant_id, {"ids": [], "errors": Counter()})
        ctx.request_ids[demo_tenant.tenant_id] = outcomes["ids"]
        section[demo_tenant.tenant_id] = {
            "source": "replay" if demo_tenant.tenant_id in skipped else "generated",
            "posted": len(outcomes["ids"]) + sum(outcomes["errors"].values()),
            "accepted": len(outcomes["ids"]),
            "rejected": dict(outcomes["errors"]),
        }
        if demo_tenant.tenant_id in skipped:
            section[demo_tenant.tenant_id]["rows_skipped"] = skipped[demo_tenant.tenant_id]
    return section


async def _post_all(
    base_url: str, jobs: list[tuple[DemoTenant, list[tuple[str, str]]]]
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    semaphore = asyncio.Semaphore(REPLAY_CONCURRENCY)
    url = f"{base_url}/open311/v2/requests.json"

    with Progress(console=err_console, transient=True) as progress:
        bar = progress.add_task("filing requests", total=len(jobs))
        async with httpx.AsyncClient(timeout=30) as client:

            async def post(demo_tenant: DemoTenant, form: list[tuple[str, str]]) -> None:
                entry = results.setdefault(demo_tenant.tenant_id, {"ids": [], "errors": Counter()})
                try:
                    async with semaphore:
                        response = await client.post(
                            url, content=urlencode(form).encode("ascii"), headers=FORM_HEADERS
                        )
                except httpx.HTTPError as exc:
                    entry["errors"][type(exc).__name__] += 1
                    log.warning(
                        "demo_request_failed", tenant_id=demo_tenant.tenant_id, error=repr(exc)
                    )
                    progress.advance(bar)
                    return
                request_id = _request_id(response)
                if request_id:
                    entry["ids"].append(request_id)
                else:
                    entry["errors"][f"HTTP {response.status_code}"] += 1
                    # Open311 error descriptions name the field, never the submitted value.
                    log.warning(
                        "demo_request_rejected",
                        tenant_id=demo_tenant.tenant_id,
                        status=response.status_code,
                        error=response.text[:300],
                    )
                progress.advance(bar)

            await asyncio.gather(*(post(tenant, form) for tenant, form in jobs))
    return results


def _request_id(response: httpx.Response) -> str | None:
    if response.status_code not in (200, 201):
        return None
    body = response.json()
    if isinstance(body, list) and body:
        return body[0].get("service_request_id")
    return None


def wait_and_summarize(ctx: DemoContext) -> dict[str, Any]:
    """Wait until every delivery of the replayed requests is sent or dead (or the time is up),
    then count per tenant: received, routed, requests by status, deliveries by state, SLA."""
    request_ids = ctx.request_ids
    deadline = time.monotonic() + ctx.options.wait_seconds
    with Progress(console=err_console, transient=True) as progress:
        total = sum(len(ids) for ids in request_ids.values())
        bar = progress.add_task("routing to agencies", total=total)
        while True:
            per_tenant = {
                tenant_id: _tenant_summary(ctx, tenant_id, ids)
                for tenant_id, ids in request_ids.items()
            }
            settled = sum(
                item["routed"] + item["unroutable"] + item["without_agency"]
                for item in per_tenant.values()
            )
            progress.update(bar, completed=settled)
            if settled >= total or time.monotonic() > deadline:
                break
            time.sleep(0.5)

    for tenant_id, item in per_tenant.items():
        item["name"] = ctx.tenant(tenant_id).name
        receiver: AgencyReceiver | None = ctx.receivers
        if receiver is not None:
            prefix = f"/agencies/{tenant_id}/"
            item["agency_receipts"] = sum(
                1 for received in receiver.snapshot() if received.path.startswith(prefix)
            )
    timed_out = settled < total
    return {"tenants": per_tenant, "complete": not timed_out}


def _tenant_summary(ctx: DemoContext, tenant_id: str, request_ids: list[str]) -> dict[str, Any]:
    tenant_ctx = TenantContext(tenant_id=tenant_id, actor="cli:demo")
    now = utcnow()
    with unit_of_work(tenant_ctx, engine=ctx.engine, write=False) as session:
        requests = session.scalars(
            select(ServiceRequest).where(ServiceRequest.id.in_(request_ids))
        ).all()
        deliveries = session.scalars(
            select(Delivery).where(Delivery.request_id.in_(request_ids))
        ).all()

    by_request: dict[str, list[str]] = {}
    for delivery in deliveries:
        by_request.setdefault(delivery.request_id, []).append(delivery.state)
    routed = sum(1 for states in by_request.values() if all(s == "sent" for s in states))
    unroutable = sum(
        1
        for states in by_request.values()
        if all(s in ("sent", "dead") for s in states) and "dead" in states
    )
    without_agency = sum(1 for request in requests if request.id not in by_request)
    return {
        "received": len(requests),
        "routed": routed,
        "unroutable": unroutable,
        "without_agency": without_agency,
        "pending": len(requests) - routed - unroutable - without_agency,
        "by_status": dict(Counter(request.status for request in requests)),
        "deliveries": dict(Counter(delivery.state for delivery in deliveries)),
        "sla": _sla_counts(requests, now),
    }


def _sla_counts(requests: list[ServiceRequest], now: datetime) -> dict[str, int]:
    counts = {"on_time": 0, "breached": 0, "no_target": 0}
    for request in requests:
        if request.expected_at is None:
            counts["no_target"] += 1
        elif request.sla_breached_at is not None or as_utc(request.expected_at) < now:
            counts["breached"] += 1
        else:
            counts["on_time"] += 1
    return counts


def render_setup(section: dict[str, Any]) -> None:
    """Print a setup step's section as `key: value` lines."""
    for key, value in section.items():
        if isinstance(value, list):
            value = ", ".join(str(item) for item in value)
        console.print(f"{key}: {value}", highlight=False, markup=False)


def render_replay(section: dict[str, Any]) -> None:
    rows = [
        [
            tenant_id,
            item["source"],
            item["posted"],
            item["accepted"],
            ", ".join(f"{reason} {count}" for reason, count in item["rejected"].items()),
        ]
        for tenant_id, item in section.items()
    ]
    table(
        "Requests filed through Open311",
        ["tenant", "source", "posted", "accepted", "rejected"],
        rows,
    )


def render_summary(section: dict[str, Any]) -> None:
    rows = []
    for tenant_id, item in section["tenants"].items():
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(item["by_status"].items()))
        sla = item["sla"]
        rows.append(
            [
                tenant_id,
                item["received"],
                item["routed"],
                statuses,
                item.get("agency_receipts", ""),
                f"{sla['on_time']}/{sla['breached']}/{sla['no_target']}",
            ]
        )
    table(
        "Routing per tenant",
        [
            "tenant",
            "received",
            "routed",
            "status",
            "receipts",
            "SLA ok/late/none",
        ],
        rows,
    )
