"""`hub db`: schema migrations and the outbox backlog."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.exc import OperationalError

from hub.cli.output import JSON_OPTION, cli_errors, emit, fail, table
from hub.core.clock import as_utc, utcnow
from hub.core.logging import configure_logging
from hub.core.migrate import upgrade
from hub.core.settings import get_settings

app = typer.Typer(help="Database schema migrations and the outbox backlog.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(as_json: bool = JSON_OPTION) -> None:
    """Migrate the configured database (HUB_DATABASE_URL) to the newest schema."""
    with cli_errors():
        upgrade()
    url = get_settings().effective_database_url
    backend = url.split(":", 1)[0]
    emit(
        {"migrated": True, "backend": backend},
        as_json,
        lambda d: print(f"database migrated ({backend})"),
    )


def _require_schema(url: str) -> None:
    """Fail with the fix when the database has no hub schema yet, without creating it: an
    embedded database file is not opened when it does not exist."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from hub.core.db import get_engine

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        if not Path(parsed.database).exists():
            fail(
                f"no hub database at {parsed.database} yet; create it with `hub db upgrade`, "
                "or set HUB_DATABASE_URL to the database the hub uses"
            )
    try:
        migrated = inspect(get_engine(url)).has_table("outbox")
    except OperationalError as exc:
        fail(
            f"cannot read the database ({type(exc).__name__}: {str(exc.orig).strip()}); "
            "check that it is running and that HUB_DATABASE_URL points at it"
        )
    if not migrated:
        fail(f"the database at {url} has no hub tables yet; create them with `hub db upgrade`")


@app.command("status")
def status_command(as_json: bool = JSON_OPTION) -> None:
    """Show the outbox backlog of the configured database, read-only: rows waiting to be
    published per queue and task, and the age of the oldest due row."""
    from hub.core.db import unit_of_work
    from hub.core.outbox import backlog_by_task
    from hub.core.tenancy import SystemContext

    # Log lines go to stderr, so stdout holds only the report.
    configure_logging()
    url = get_settings().effective_database_url
    _require_schema(url)
    now = utcnow()
    try:
        with (
            cli_errors(),
            unit_of_work(SystemContext("cli db status"), write=False) as session,
        ):
            entries = backlog_by_task(session, now)
    except OperationalError as exc:
        fail(
            f"cannot read the database ({type(exc).__name__}: {str(exc.orig).strip()}); "
            "check that it is running and that HUB_DATABASE_URL points at it"
        )

    by_task = [
        {
            "queue": entry.queue,
            "task": entry.task,
            "due": entry.due,
            "oldest_due_seconds": _age_seconds(entry.oldest_due_at, now),
            "scheduled": entry.scheduled,
        }
        for entry in entries
    ]
    ages = [row["oldest_due_seconds"] for row in by_task if row["oldest_due_seconds"] is not None]
    data = {
        "backend": url.split(":", 1)[0],
        "outbox": {
            "due": sum(row["due"] for row in by_task),
            "oldest_due_seconds": max(ages, default=0.0),
            "scheduled": sum(row["scheduled"] for row in by_task),
            "by_task": by_task,
        },
    }
    emit(data, as_json, _render_status)


def _age_seconds(moment: datetime | None, now: datetime) -> float | None:
    if moment is None:
        return None
    return round(max((now - as_utc(moment)).total_seconds(), 0.0), 1)


def _render_status(data: dict[str, Any]) -> None:
    outbox = data["outbox"]
    oldest = f", oldest due {outbox['oldest_due_seconds']} s ago" if outbox["due"] else ""
    print(
        f"outbox ({data['backend']}): {outbox['due']} due{oldest}, "
        f"{outbox['scheduled']} scheduled for later"
    )
    rows = [
        (row["queue"], row["task"], row["due"], row["oldest_due_seconds"], row["scheduled"])
        for row in outbox["by_task"]
    ]
    if rows:
        table("Outbox backlog", ["queue", "task", "due", "oldest due s", "scheduled"], rows)
