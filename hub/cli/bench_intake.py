"""`hub bench intake`: Open311 POST and GET throughput of the hub against a bare FastAPI app.

Both servers run under the same uvicorn settings (loopback, the same number of worker
processes, log level warning), one after the other, and the same load generator drives both
from a separate process. The hub runs on PostgreSQL: a fresh database that the benchmark creates
and drops, or the one in HUB_DATABASE_URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlencode

import typer
from rich.progress import Progress
from sqlalchemy import text
from sqlalchemy.engine import make_url

from hub.cli.bench_support import (
    create_database,
    drop_database,
    run_load_process,
    server_environment,
    wait_until_serving,
)
from hub.cli.demo.generate import generate_day
from hub.cli.demo.pipeline import free_port
from hub.cli.output import JSON_OPTION, cli_errors, console, emit, err_console, fail, table
from hub.cli.serve import stop_process
from hub.core.db import get_engine, unit_of_work
from hub.core.logging import configure_logging
from hub.core.migrate import upgrade
from hub.core.settings import get_settings
from hub.core.tenancy import SystemContext, TenantContext

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_TENANT_MANIFEST = "boston.yaml"
SERVER_START_SECONDS = 60.0
WARMUP_REQUESTS = 300
# POST requests a minute for the benchmark's key: above the 60,000 calls a run makes at most.
UNREACHED_POST_LIMIT = 1_000_000


def intake(
    processes: int = typer.Option(2, min=1, max=32, help="uvicorn worker processes per server."),
    duration: float = typer.Option(
        10.0, min=1, max=300, help="Seconds per measured run (four runs)."
    ),
    requests: int = typer.Option(
        60_000, min=100, max=1_000_000, help="Maximum number of requests per measured run."
    ),
    concurrency: int = typer.Option(32, min=1, max=512, help="Concurrent client connections."),
    admin_url: str = typer.Option(
        DEFAULT_ADMIN_URL,
        "--admin-url",
        help="PostgreSQL URL used to create and drop the benchmark database "
        "when HUB_DATABASE_URL is not set.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure POST and GET requests/s and p99 of the hub and of a bare FastAPI endpoint."""
    settings = get_settings()
    configure_logging(settings)
    configured = settings.database_url
    if configured and not configured.startswith("postgresql"):
        fail(
            f"HUB_DATABASE_URL={make_url(configured).render_as_string(hide_password=True)} is "
            "not PostgreSQL; unset it (a fresh database is created) or point it at PostgreSQL"
        )

    created = None
    with cli_errors():
        if configured:
            database_url = configured
        else:
            database_url = created = create_database(admin_url)
    try:
        figures = _run(database_url, processes, duration, requests, concurrency)
    finally:
        if created is not None:
            drop_database(admin_url, created)

    figures["settings"] = {
        "processes": processes,
        "duration_seconds": duration,
        "max_requests": requests,
        "concurrency": concurrency,
        "database": "created" if created else "HUB_DATABASE_URL",
        # The API's outbox relay publishes every accepted request to this broker.
        "broker": "RabbitMQ" if settings.uses_rabbitmq else "embedded (HUB_BROKER_URL unset)",
        "cpus": os.cpu_count(),
    }
    figures["warnings"] = _warnings(figures)
    emit(figures, as_json, _render)


def prepare_tenant(database_url: str) -> tuple[str, str, list[str]]:
    """Onboard the Boston example; return its jurisdiction, an Open311 key and POST bodies."""
    from tenants.keys import create_api_key
    from tenants.manifest import example_paths, load_manifest
    from tenants.onboarding import onboard

    upgrade(database_url)
    path = next(p for p in example_paths() if p.name == BENCH_TENANT_MANIFEST)
    manifest = load_manifest(path)
    with unit_of_work(SystemContext("bench setup"), engine=get_engine(database_url)) as session:
        tenant, _ = onboard(session, manifest, actor="cli:bench")
        ctx = TenantContext(tenant_id=tenant.id, actor="cli:bench")
        # The limiter runs, so its cost is measured, but never rejects the benchmark's calls.
        _, api_key = create_api_key(
            session,
            ctx,
            roles=["open311"],
            label="hub bench intake",
            max_posts_per_minute=UNREACHED_POST_LIMIT,
        )
        jurisdiction = tenant.jurisdiction_id
    bodies = [
        urlencode(item.form(jurisdiction, api_key)) for item in generate_day(manifest, 500, seed=7)
    ]
    return jurisdiction, api_key, bodies


def _run(
    database_url: str, processes: int, duration: float, requests: int, concurrency: int
) -> dict[str, Any]:
    jurisdiction, _api_key, bodies = prepare_tenant(database_url)
    results: dict[str, Any] = {}

    with (
        server_environment(database_url) as env,
        Progress(console=err_console, transient=True) as progress,
    ):
        phase = progress.add_task("benchmark", total=4)

        for target in ("hub", "bare"):
            port = free_port()
            server = start_bench_server(target, port, processes, env)
            try:
                wait_until_serving(port, server, path="/open311/v2/requests/none.json")
                base = f"http://127.0.0.1:{port}/open311/v2/requests"
                post_plan = {
                    "base_url": f"{base}.json",
                    "method": "POST",
                    "targets": bodies,
                    "concurrency": concurrency,
                    "collect_ids": True,
                }
                _load({**post_plan, "requests": WARMUP_REQUESTS, "duration_seconds": 5})
                if target == "hub":
                    analyze(database_url)
                post = _load({**post_plan, "requests": requests, "duration_seconds": duration})
                if target == "hub":
                    post["outbox_drain_seconds"] = _wait_for_outbox(database_url)
                    analyze(database_url)
                progress.advance(phase)
                ids = post.pop("ids") or ["B000000001"]
                get_plan = {
                    "base_url": base,
                    "method": "GET",
                    "targets": [f"/{i}.json?jurisdiction_id={jurisdiction}" for i in ids],
                    "concurrency": concurrency,
                }
                _load({**get_plan, "requests": WARMUP_REQUESTS, "duration_seconds": 5})
                get = _load({**get_plan, "requests": requests, "duration_seconds": duration})
                get.pop("ids")
                progress.advance(phase)
            finally:
                stop_process(server)
            results[target] = {"post": post, "get": get}

    results["ratio"] = {
        method: round(
            results["hub"][method]["requests_per_second"]
            / max(results["bare"][method]["requests_per_second"], 1e-9),
            3,
        )
        for method in ("post", "get")
    }
    return results


# Runs shorter than this measure connection start-up more than throughput.
SHORT_RUN_SECONDS = 2.0
# How long the GET run waits for the relay to publish the POST run's requests.
OUTBOX_DRAIN_SECONDS = 120.0


def _wait_for_outbox(database_url: str) -> float:
    """Wait until the API's relay has published every outbox row; return the seconds waited.

    The relay publishes the POST run's requests after their responses were sent. Without the wait it
    would still be publishing them during the GET run, which then measured both.
    """
    started = time.monotonic()
    engine = get_engine(database_url)
    while time.monotonic() - started < OUTBOX_DRAIN_SECONDS:
        with engine.connect() as conn:
            waiting = conn.execute(
                text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            ).scalar()
        if not waiting:
            break
        time.sleep(0.2)
    else:
        fail(
            f"the hub's outbox relay did not publish the POST run's requests within "
            f"{OUTBOX_DRAIN_SECONDS:.0f} s; see the hub server's log"
        )
    return round(time.monotonic() - started, 2)


def analyze(database_url: str) -> None:
    """Refresh the planner's statistics, as autovacuum keeps them on a running hub.

    With PostgreSQL's defaults (`autovacuum_analyze_scale_factor` 0.1, `autovacuum_naptime`
    1 min), autovacuum analyzes a table once a tenth of its rows changed, and looks once a
    minute. Without this step the runs would measure the
    benchmark's new database in its first minute. With no statistics PostgreSQL chose plans
    that read every row of the tenant, for the duplicate search and for GET by id, so their
    cost grew with each request stored.
    """
    engine = get_engine(database_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def start_bench_server(
    target: str, port: int, processes: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if target == "hub":
        command = [
            sys.executable,
            "-m",
            "hub.cli.main",
            "serve",
            *common,
            "--processes",
            str(processes),
            "--no-worker",
        ]
    else:
        # The same uvicorn settings `hub serve` uses: workers, log level warning.
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "hub.cli.bench_bare:create_app",
            "--factory",
            *common,
            "--workers",
            str(processes),
            "--log-level",
            "warning",
        ]
    settings = get_settings()
    settings.ensure_var_dir()
    log_path = settings.var_dir / f"bench-{target}.log"
    err_console.print(f"{target} server log: {log_path}", highlight=False, markup=False)
    with log_path.open("wb") as log_file:
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def _load(plan: dict[str, Any]) -> dict[str, Any]:
    return run_load_process("hub.cli.bench_load", plan)


def _warnings(figures: dict[str, Any]) -> list[str]:
    """Return the warnings about the figures, for the table and the JSON document alike."""
    shortest = min(figures[t][m]["seconds"] for t in ("hub", "bare") for m in ("post", "get"))
    if shortest >= SHORT_RUN_SECONDS:
        return []
    return [
        f"a run lasted {shortest} s. Rates of runs under {SHORT_RUN_SECONDS:.0f} s include "
        "connection start-up and do not compare with figures of the default settings. "
        "Raise --duration and --requests for longer runs."
    ]


def _render(figures: dict[str, Any]) -> None:
    rows = []
    for target in ("hub", "bare"):
        for method in ("post", "get"):
            item = figures[target][method]
            errors = sum(item["errors"].values())
            rows.append(
                [
                    target,
                    method.upper(),
                    item["ok"],
                    errors,
                    item["seconds"],
                    item["requests_per_second"],
                    item["p50_ms"],
                    item["p99_ms"],
                ]
            )
    table(
        "hub bench intake (Open311 POST requests.json, GET requests/{id}.json)",
        ["server", "method", "ok", "errors", "seconds", "requests/s", "p50 ms", "p99 ms"],
        rows,
    )
    for warning in figures["warnings"]:
        console.print(warning, highlight=False, markup=False)
    drain = figures["hub"]["post"].get("outbox_drain_seconds")
    if drain is not None:
        console.print(
            f"the hub's relay published the POST run's requests {drain} s after it ended; "
            "the GET run started then",
            highlight=False,
            markup=False,
        )
    ratio = figures["ratio"]
    console.print(
        f"hub / bare throughput: POST {ratio['post']:.0%}, GET {ratio['get']:.0%} "
        "(goal: 50% or more)",
        highlight=False,
        markup=False,
    )
