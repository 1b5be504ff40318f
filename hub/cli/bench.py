"""`hub bench`: benchmarks that print measured figures (performance goals live here, not in tests).

Each subcommand measures one part of the hub against a baseline run in the same process and
prints a table, or one JSON document with `--json`. Features add their subcommand here:
`app.command("NAME")(function)`.
"""

from __future__ import annotations

import typer

from hub.cli import bench_alerts, bench_intake, bench_overflow, bench_privacy

app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)

app.command("intake")(bench_intake.intake)
app.command("overflow")(bench_overflow.overflow)
app.command("alerts")(bench_alerts.alerts)
app.command("privacy")(bench_privacy.privacy)
