"""The `hub demo` command: option parsing, running the steps, printing, serving until Ctrl-C."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import NoReturn

import typer

from hub.cli.demo.context import DemoContext, DemoOptions
from hub.cli.demo.lock import hold_demo_lock
from hub.cli.output import (
    JSON_OPTION,
    cli_errors,
    console,
    emit,
    err_console,
    error_document,
    fail,
    print_error,
)
from hub.cli.serve import describe_exit
from hub.core.db import get_engine
from hub.core.logging import configure_logging
from hub.core.migrate import upgrade
from hub.core.settings import Settings, get_settings, reset_settings_cache
from tenants.manifest import example_paths, load_manifest


def demo(
    requests: int = typer.Option(
        40, "--requests", min=1, max=5000, help="Requests to file per tenant."
    ),
    replay: Path | None = typer.Option(
        None, "--replay", help="Replay a real 311 export instead of generated requests."
    ),
    replay_format: str | None = typer.Option(
        None, "--format", help="Format of the --replay file, as `hub import` names it."
    ),
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant the --replay file is for."),
    serve: bool = typer.Option(
        True, "--serve/--no-serve", help="Keep serving after the summary until Ctrl-C."
    ),
    wait: float = typer.Option(
        60.0, "--wait", min=1, help="Seconds to wait for routing before summarizing."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Onboard the example cities, file a day of requests through Open311, route them to
    local agency receivers and print a summary per tenant."""
    if replay is not None and (replay_format is None or tenant is None):
        fail(f"--replay {replay} needs --format FORMAT and --tenant ID as well")

    if "HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE" not in os.environ:
        # The demo's residents have alert webhooks on its receiver on 127.0.0.1, so its API
        # and its worker process, which inherits the environment, allow loopback addresses.
        os.environ["HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE"] = "true"
        reset_settings_cache()
    settings = get_settings()
    if "HUB_LOG_LEVEL" not in os.environ:
        # The demo's own output is the summary: info-level events from the API and the worker
        # would bury it, so both log warnings and errors only unless HUB_LOG_LEVEL is set.
        os.environ["HUB_LOG_LEVEL"] = "WARNING"
        settings = settings.model_copy(update={"log_level": "WARNING"})
        logging.getLogger().setLevel(logging.WARNING)
    configure_logging(settings, force=True)
    options = DemoOptions(
        requests_per_tenant=requests,
        replay_file=replay,
        replay_format=replay_format,
        replay_tenant=tenant,
        wait_seconds=wait,
    )
    # Taken before `_start_fresh` deletes anything. The kernel also releases it when this
    # process dies without reaching `finally`.
    lock = hold_demo_lock(settings)
    try:
        _run(settings, options, serve=serve, as_json=as_json)
    finally:
        lock.close()


def _run(settings: Settings, options: DemoOptions, *, serve: bool, as_json: bool) -> None:
    """Start from an empty database, run the steps, print the summary and serve."""
    from hub.cli.demo.steps import STEPS

    _start_fresh(settings)
    with cli_errors():
        upgrade()
    ctx = DemoContext(settings=settings, engine=get_engine(), options=options)
    try:
        for step in STEPS:
            err_console.print(f"[demo] {step.title or step.name}", highlight=False, markup=False)
            with cli_errors():
                section = step.run(ctx)
            if section is not None:
                ctx.summary[step.name] = section
        problem = _problem(ctx)
        if problem is not None:
            # Under --json the summary contains the error, so stdout gets one JSON document.
            ctx.summary.update(error_document(problem, 1))
        emit(ctx.summary, as_json, lambda data: _render(data, STEPS))
        if problem is not None:
            _exit_after_summary(problem)
        if serve:
            _serve_until_interrupted(ctx)
    finally:
        ctx.close()


# Written next to the embedded database the demo creates; a second run that finds it may start over.
DEMO_MARKER = "demo-database"
_EMBEDDED_FILES = (
    "hub.db",
    "hub.db-wal",
    "hub.db-shm",
    "broker.db",
    "broker.db-wal",
    "broker.db-shm",
)


def _stored_tenants(database: Path) -> set[str]:
    try:
        with closing(sqlite3.connect(database)) as conn:
            return {row[0] for row in conn.execute("SELECT id FROM tenants")}
    except sqlite3.Error:
        return set()  # no tenants table yet: nothing was ever onboarded


def _demo_tenants() -> set[str]:
    """Return the ids of the example tenants that the demo onboards."""
    return {load_manifest(path).id for path in example_paths()}


def _start_fresh(settings: Settings) -> None:
    """Give each run of the demo on the embedded default an empty database.

    A second run on the same folder would otherwise add to the first one's residents, contacts
    and alerts, and its summary would count both. A database the demo did not create, with
    tenants in it, is the operator's: the demo stops rather than delete it. It also stops when a
    database the demo created contains a tenant that the operator onboarded later. With
    HUB_DATABASE_URL or HUB_BROKER_URL set the demo adds to that database and removes nothing.
    """
    if settings.database_url or settings.broker_url:
        return
    var = settings.var_dir
    database = var / "hub.db"
    marker = var / DEMO_MARKER
    stored = _stored_tenants(database) if database.exists() else set()
    if stored and not marker.exists():
        fail(
            f"{database.resolve()} holds tenants that `hub demo` did not create; run the demo "
            "with HUB_VAR_DIR set to an empty folder, or move that database away"
        )
    others = sorted(stored - _demo_tenants())
    if others:
        fail(
            f"{database.resolve()} holds tenants that were onboarded after the demo "
            f"({', '.join(others)}), and the demo would delete them; run the demo with "
            "HUB_VAR_DIR set to an empty folder, or move that database away"
        )
    if database.exists():
        for name in _EMBEDDED_FILES:
            (var / name).unlink(missing_ok=True)
        shutil.rmtree(var / "demo", ignore_errors=True)
        err_console.print(
            f"[demo] starting over: removed the previous demo's database in {var.resolve()}",
            highlight=False,
            markup=False,
        )
    settings.ensure_var_dir()
    marker.write_text(
        "hub demo created the database in this folder and may delete it when it runs again.\n",
        encoding="utf-8",
    )


def _exit_after_summary(message: str) -> NoReturn:
    """Print `message` on stderr only and exit 1, because stdout already contains the summary."""
    print_error(message, code=1, as_json=False)
    raise typer.Exit(1)


def _problem(ctx: DemoContext) -> str | None:
    """Return why the run did not show the pipeline working, or None when it did."""
    stopped = _worker_exit_message(ctx)
    if stopped is not None:
        return stopped
    accepted = sum(len(ids) for ids in ctx.request_ids.values())
    if accepted == 0:
        return "the API accepted none of the demo's requests; see the rejections in the summary"
    if not ctx.summary.get("pipeline", {}).get("complete", False):
        return "some deliveries were still pending when the wait ended; raise --wait"
    return None


def _worker_exit_message(ctx: DemoContext) -> str | None:
    """Return why the demo cannot go on when its worker process has exited, else None."""
    if ctx.worker is None or ctx.worker.poll() is None:
        return None
    return (
        f"the worker process {describe_exit(ctx.worker.returncode)}, so nothing routes "
        "requests any more; see its log above and run `hub demo` again"
    )


def _render(summary: dict, steps: list) -> None:
    for step in steps:
        section = summary.get(step.name)
        if section is None:
            continue
        if step.render is not None:
            step.render(section)
        else:
            console.print(f"{step.name}:")
            console.print(json.dumps(section, indent=2, ensure_ascii=False, default=str))


def _serve_until_interrupted(ctx: DemoContext) -> None:
    stop = threading.Event()
    # SIGINT gets a handler of its own: a shell without job control starts a background job
    # with SIGINT ignored, and Python keeps that setting, so Ctrl-C would not stop the demo.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    err_console.print(
        f"[demo] serving at {ctx.base_url} (Open311 at {ctx.base_url}/open311/v2/); "
        "press Ctrl-C to stop",
        highlight=False,
        markup=False,
    )
    # The demo's keys are throwaway credentials on a loopback server. They are printed so a
    # newcomer can file requests by hand, whereas onboarding prints a real key once.
    for tenant in ctx.tenants:
        err_console.print(
            f"[demo] {tenant.name}: jurisdiction_id={tenant.jurisdiction_id} "
            f"api_key={tenant.api_key}",
            highlight=False,
            markup=False,
        )
    while not stop.wait(1):
        stopped = _worker_exit_message(ctx)
        if stopped is not None:
            _exit_after_summary(stopped)
