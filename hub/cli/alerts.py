"""`hub alerts`: validate, compose, approve, send and follow CAP alerts; manage subscribers."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.alerts.cap.validate import check_document
from hub.cli.output import JSON_OPTION, cli_errors, console, emit, fail

app = typer.Typer(help="CAP 1.2 alerts: validate, compose, approve, send, status.")


@app.command("validate")
def validate_command(
    path: Path = typer.Argument(..., help="CAP 1.2 XML file to check."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print every problem in a CAP 1.2 file; exit 1 when it is invalid."""
    with cli_errors():
        if not path.is_file():
            fail(f"file not found: {path}; check the path")
        alert, problems = check_document(path.read_bytes())
    data = {
        "file": str(path),
        "valid": not problems,
        "identifier": alert.identifier if alert else None,
        "problems": [{"path": p.path, "message": p.message} for p in problems],
    }

    def render(result: dict) -> None:
        if result["valid"]:
            console.print(f"{path}: valid CAP 1.2 ({result['identifier']})", markup=False)
            return
        console.print(f"{path}: {len(problems)} problem(s)", markup=False)
        for problem in problems:
            console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)

    emit(data, as_json, render)
    if problems:
        raise typer.Exit(1)
