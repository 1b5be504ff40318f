"""The `hub` command: serve, worker, demo and the operator command groups."""

from __future__ import annotations

import typer

from hub.cli import alerts as alert_commands
from hub.cli import audit as audit_commands
from hub.cli import bench as bench_commands
from hub.cli import db as db_commands
from hub.cli import imports as import_commands
from hub.cli import loadtest as loadtest_commands
from hub.cli import overflow as overflow_commands
from hub.cli import privacy as privacy_commands
from hub.cli import requests as request_commands
from hub.cli import serve as serve_commands
from hub.cli import tenants as tenant_commands
from hub.cli.demo.command import demo as demo_command

app = typer.Typer(
    name="hub",
    help="Regional 311 hub: a multi-tenant Open311 back end with alerts and overflow routing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("serve")(serve_commands.serve)
app.command("worker")(serve_commands.worker)
app.command("demo")(demo_command)
app.add_typer(alert_commands.app, name="alerts")
app.add_typer(bench_commands.app, name="bench")
app.add_typer(db_commands.app, name="db")
app.command("loadtest")(loadtest_commands.loadtest)
app.command("import")(import_commands.import_command)
app.add_typer(request_commands.app, name="requests")
app.add_typer(privacy_commands.app, name="privacy")
app.add_typer(audit_commands.app, name="audit")
app.add_typer(overflow_commands.app, name="overflow")
app.add_typer(tenant_commands.app, name="tenants")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
