"""Errors under `--json` still print one JSON document on stdout."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from hub.cli.output import JSON_OPTION, emit, fail

app = typer.Typer()


@app.command()
def lookup(name: str, as_json: bool = JSON_OPTION) -> None:
    if name == "missing":
        fail(f"record {name} not found; list the records first")
    emit({"name": name}, as_json, print)


def test_error_with_json_prints_json():
    result = CliRunner().invoke(app, ["missing", "--json"])
    document = json.loads(result.stdout)
    assert result.exit_code == 2
    assert document["error"] == "record missing not found; list the records first"


def test_error_without_json_prints_text_only():
    result = CliRunner().invoke(app, ["missing"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error: record missing not found" in result.stderr


def test_success_with_json_prints_one_document():
    result = CliRunner().invoke(app, ["boston", "--json"])
    assert json.loads(result.stdout) == {"name": "boston"}
