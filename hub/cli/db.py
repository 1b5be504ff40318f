"""`hub db`: schema migrations."""

from __future__ import annotations

import typer

from hub.cli.output import JSON_OPTION, cli_errors, emit
from hub.core.migrate import upgrade
from hub.core.settings import get_settings

app = typer.Typer(help="Database schema commands.", no_args_is_help=True)


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
